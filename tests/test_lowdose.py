import numpy as np
import pytest

from pipeline.synthetic.lowdose import low_dose_noise_hu


def _water(n=128):
    yy, xx = np.ogrid[:n, :n]
    return np.where((yy - n / 2) ** 2 + (xx - n / 2) ** 2 < (0.4 * n) ** 2, 0.0, -1000.0)


def test_noise_level_follows_photon_count():
    hu = _water()
    centre = (slice(44, 84), slice(44, 84))
    std = {i0: float(low_dose_noise_hu(hu, 2.0, i0, seed=1)[centre].std()) for i0 in (1e4, 1e5)}
    assert 10 < std[1e5] < std[1e4]
    assert std[1e4] / std[1e5] == pytest.approx(np.sqrt(10), rel=0.2)  # quantum noise ~ 1/sqrt(I0)


def test_noise_is_seeded_zero_mean_and_correlated():
    hu = _water()
    a = low_dose_noise_hu(hu, 2.0, 1e4, seed=3)
    np.testing.assert_array_equal(a, low_dose_noise_hu(hu, 2.0, 1e4, seed=3))
    assert not np.array_equal(a, low_dose_noise_hu(hu, 2.0, 1e4, seed=4))
    patch = a[40:88, 40:88]
    assert abs(float(patch.mean())) < 0.2 * float(patch.std())
    # FBP noise is not white: its power spectrum rises with frequency (ramp filter), so the
    # lowest frequencies carry much less power than the middle ones
    power = np.abs(np.fft.fftshift(np.fft.fft2(patch - patch.mean()))) ** 2
    fy, fx = np.indices(power.shape) - np.array(power.shape)[:, None, None] // 2
    radius = np.hypot(fy, fx)
    low, mid = power[(radius > 0) & (radius <= 3)].mean(), power[(radius > 10) & (radius <= 16)].mean()
    assert low < 0.5 * mid
    assert a[0, 0] == 0.0  # outside the reconstruction circle


def test_a_whole_slice_has_noise_in_its_tissue_corners_and_air_corners_keep_the_plain_simulation():
    from pipeline.synthetic.lowdose import low_dose_noise_whole_hu

    hu = _water()
    same = low_dose_noise_whole_hu(hu, 2.0, 1e4, seed=3)
    np.testing.assert_array_equal(same, low_dose_noise_hu(hu, 2.0, 1e4, seed=3))
    wide = np.zeros((128, 128))  # water to the corners: a body wider than the reconstruction circle
    plain = low_dose_noise_hu(wide, 2.0, 1e4, seed=3)
    whole = low_dose_noise_whole_hu(wide, 2.0, 1e4, seed=3)
    corner, centre = (slice(0, 12), slice(0, 12)), (slice(58, 70), slice(58, 70))
    assert plain[corner].std() < 0.2 * plain[centre].std()  # mostly outside the circle: no noise
    assert whole[corner].std() > 0.3 * whole[centre].std() and whole.shape == wide.shape
    np.testing.assert_array_equal(whole, low_dose_noise_whole_hu(wide, 2.0, 1e4, seed=3))
    rect = np.zeros((64, 128))  # not square: padded as well, cropped back
    assert low_dose_noise_whole_hu(rect, 2.0, 1e4, seed=1)[:, :8].std() > 0
