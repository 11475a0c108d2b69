"""bench.lowdose_level: low-dose noise where it is, against the level the series estimate reads."""
import numpy as np

from bench.lowdose_level import patch_ratios


def test_low_dose_noise_is_stronger_in_the_body_centre_than_the_estimate_reads_at_its_edge():
    n = 192
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - (n - 1) / 2, xx - (n - 1) / 2)
    hu = np.where(r < 85, 40.0, -1000.0).astype(np.float32)  # a soft-tissue disc of 12 cm in air
    estimate, ratios = patch_ratios(hu, 0.7, 2e3, seed=5, patch=32)
    assert 100 < estimate < 500  # HU
    again = patch_ratios(hu, 0.7, 2e3, seed=5, patch=32)
    np.testing.assert_array_equal(ratios, again[1])  # seeded
    centre = [(r_, c_) for r_ in range(0, n - 31, 16) for c_ in range(0, n - 31, 16)
              if np.mean(hu[r_:r_ + 32, c_:c_ + 32] > -200) >= 0.5]
    assert len(centre) == ratios.size > 40  # every patch on the 16-px grid at least half inside
    dist = np.array([np.hypot(r_ + 16 - n / 2, c_ + 16 - n / 2) for r_, c_ in centre])
    assert ratios[dist < 30].mean() > 1.1 * ratios[dist > 60].mean()  # longer paths through the middle
