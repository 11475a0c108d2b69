"""The noise estimate (pipeline/inference/noise_level.py): known noise added to real and phantom slices."""
import logging
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipeline.dicom.reader import to_hu
from pipeline.inference.noise_level import estimate_series, highpass_sigma, sample_positions, series_noise, slice_noise
from pipeline.qa.noise import add_gaussian_noise

LIDC = Path(__file__).parent / "data" / "lidc_ge_padding.dcm"  # LIDC-IDRI, CC BY 3.0 (tests/data/README.md)


@pytest.fixture(scope="module")
def lidc_hu():
    return to_hu(pydicom.dcmread(LIDC), LIDC)


def _disc(size=256, radius=110, hu=40.0):
    yy, xx = np.mgrid[:size, :size]
    return np.where((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radius**2, hu, -1000.0).astype(np.float32)


@pytest.mark.parametrize("added", [20.0, 40.0, 80.0, 160.0])
def test_a_real_slice_with_known_noise_reads_the_total(lidc_hu, added):
    own = slice_noise(lidc_hu)
    assert own.method == "soft tissue" and 5 < own.sigma_hu < 60
    noisy = add_gaussian_noise(lidc_hu, added, seed=7)  # in HU here: unit scale is only a convention
    est = slice_noise(noisy)
    assert est.sigma_hu == pytest.approx(math.hypot(own.sigma_hu, added), rel=0.10)
    assert est.whiteness > own.whiteness and est.whiteness == pytest.approx(1.0, abs=0.15 if added >= 40 else 0.3)


@pytest.mark.parametrize("std", [3.0, 12.0, 60.0, 130.0])
def test_a_flat_phantom_reads_its_noise_from_3_to_130_hu(std):
    noisy = add_gaussian_noise(_disc(), std, seed=int(std))
    est = slice_noise(noisy)
    assert est.method == "soft tissue" and est.sigma_hu == pytest.approx(std, rel=0.05)


def test_a_slice_without_soft_tissue_still_gets_an_estimate_and_says_how():
    lung = _disc(hu=-850.0)  # a lung-only crop: no soft tissue
    rng = np.random.default_rng(3)
    lung += rng.normal(0, 25, lung.shape).astype(np.float32)
    est = slice_noise(lung)
    assert est.method == "any tissue" and est.sigma_hu == pytest.approx(25, rel=0.1)
    # no tissue block at all: a wire phantom in air (thin bright lines), white noise of 30 HU
    wires = np.full((128, 128), -1000.0, np.float32)
    wires[::16, :] = 800.0
    rough = slice_noise(wires + rng.normal(0, 30, wires.shape).astype(np.float32))
    assert rough.method == "high-pass" and rough.sigma_hu == pytest.approx(30, rel=0.15)
    tiny = slice_noise(rng.normal(0, 30, (32, 32)).astype(np.float32))  # smaller than three blocks
    assert tiny.method == "high-pass" and tiny.sigma_hu == pytest.approx(30, rel=0.15)
    series = series_noise([tiny, tiny])
    assert series.confidence == "low" and "confidence low" in series.describe()
    assert series.doubt == "no uniform region found" and series_noise([est]).doubt == ""


def test_an_empty_field_of_view_is_measured_in_air_not_by_the_white_noise_high_pass():
    from pipeline.synthetic.lowdose import low_dose_noise_hu

    air = np.full((256, 256), -1000.0, np.float32)
    noise = low_dose_noise_hu(air, 0.1, 2e4, seed=4)  # FBP noise: correlated, the high-pass reads it low
    inside = noise != 0
    est = slice_noise(air + noise)
    assert est.method == "air" and est.sigma_hu == pytest.approx(float(noise[inside].std()), rel=0.1)
    assert highpass_sigma(air + noise, inside) < 0.8 * est.sigma_hu  # what the fallback would have read
    assert series_noise([est, est]).confidence == "low"  # noise in air need not be the noise in tissue
    assert series_noise([est, est]).doubt == "no tissue: measured in air"
    padding = np.full((256, 256), -1024.0, np.float32)  # padding is not air: nothing to measure
    padding[100:110, 100:110] += np.arange(100, dtype=np.float32).reshape(10, 10)
    assert slice_noise(padding).method == "high-pass"


def test_the_series_value_is_the_median_over_slices_and_confidence_follows_the_method():
    slices = [slice_noise(add_gaussian_noise(_disc(), s, seed=k)) for k, s in enumerate((10, 12, 14, 40))]
    series = series_noise(slices)
    assert series.sigma_hu == pytest.approx(13, rel=0.08)  # one dose-modulated slice does not move it much
    assert series.low_hu < series.sigma_hu < series.high_hu and series.slices == 4
    assert series.confidence == "medium"  # the slices span more than twofold
    steady = estimate_series([add_gaussian_noise(_disc(), 20, seed=k) for k in range(3)])
    assert steady.confidence == "high" and steady.methods == {"soft tissue": 3, "any tissue": 0, "air": 0, "high-pass": 0}
    assert steady.as_dict()["sigma_hu"] == pytest.approx(20, rel=0.05)
    empty = series_noise([])
    assert math.isnan(empty.sigma_hu) and empty.confidence == "low" and empty.doubt == "no slice could be measured"
    with pytest.raises(ValueError, match="one \\(H, W\\) slice"):
        slice_noise(np.zeros((2, 64, 64)))


def test_smooth_noise_reads_less_white_than_white_noise():
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(5)
    blotchy = gaussian_filter(rng.normal(0, 1, (256, 256)), 1.5)
    blotchy *= 30 / blotchy.std()
    est = slice_noise(_disc() + blotchy.astype(np.float32))
    white = slice_noise(add_gaussian_noise(_disc(), 30, seed=1))
    assert est.sigma_hu == pytest.approx(30, rel=0.2)
    assert est.whiteness < 0.4 < 0.85 < white.whiteness


def test_streaks_read_as_fine_noise_and_blotches_as_coarse():
    """Streaks (fine across, smooth along: photon starvation behind dense paths) want the model told
    their std, blotchy noise much more (pipeline/inference/strength.py): the whiteness must tell them apart
    whatever the streaks' direction."""
    import cv2
    from scipy.ndimage import gaussian_filter

    base = np.random.default_rng(11).normal(0, 1, (256, 256)).astype(np.float32)
    line = np.ones((1, 13), np.float32) / 13
    for kernel in (line, line.T, np.eye(13, dtype=np.float32) / 13, np.fliplr(np.eye(13, dtype=np.float32)) / 13):
        streaky = cv2.filter2D(base, cv2.CV_32F, np.ascontiguousarray(kernel), borderType=cv2.BORDER_REFLECT)
        est = slice_noise(_disc() + streaky * np.float32(40 / streaky.std()))
        assert est.sigma_hu == pytest.approx(40, rel=0.25) and est.whiteness > 0.9
    blotchy = gaussian_filter(base, 2.0)
    assert slice_noise(_disc() + blotchy * np.float32(40 / blotchy.std())).whiteness < 0.5


def test_sample_positions_spread_over_the_stack():
    assert sample_positions(5) == [0, 1, 2, 3, 4]
    assert sample_positions(90) == [5, 15, 25, 35, 45, 55, 65, 75, 85]
    assert sample_positions(0) == []
    logging.getLogger(__name__).debug("positions checked")
