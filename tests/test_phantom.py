"""The synthetic anatomy has the tissues it claims, at their HU."""
import numpy as np
import pytest

from pipeline.synthetic.phantom import ALL_REGIONS, TISSUE_HU, Phantom, acquire


def _fraction(hu, lo, hi):
    return float(((hu >= lo) & (hu <= hi)).mean())


@pytest.mark.parametrize("region", ALL_REGIONS)
def test_every_region_has_air_soft_tissue_and_bone(region):
    hu = Phantom(3, region).slice_hu(0.0, 256, 1.5)
    assert hu.min() == TISSUE_HU["air"]  # air around the body
    assert _fraction(hu, 0, 100) > 0.03  # soft tissue / brain / organs
    assert _fraction(hu, 1000, 2000) > 0.0005  # cortical bone
    assert _fraction(hu, 150, 500) > 0.0005  # marrow or contrast


def test_region_specific_tissues():
    chest = Phantom(4, "chest").slice_hu(0.0, 256, 1.6)
    assert _fraction(chest, -900, -750) > 0.08  # lungs
    head = Phantom(4, "head").slice_hu(20.0, 256, 1.0)
    brain = head[100:156, 100:156]
    assert _fraction(brain, 20, 45) > 0.6  # grey and white matter inside the skull
    assert _fraction(brain, 0, 70) > 0.95  # ... with ventricles (CSF) and the falx, no bone or air
    neck = Phantom(4, "neck").slice_hu(0.0, 256, 0.8)
    assert _fraction(neck, 90, 130) > 0.002  # thyroid
    pelvis = Phantom(4, "pelvis").slice_hu(-50.0, 256, 1.6)
    assert _fraction(pelvis, 0, 20) > 0.01  # urine in the bladder


def test_seeded_and_continuous_along_z():
    a, b = Phantom(9, "abdomen"), Phantom(9, "abdomen")
    np.testing.assert_array_equal(a.slice_hu(10.0, 128, 3.0), b.slice_hu(10.0, 128, 3.0))
    near = np.abs(a.slice_hu(10.0, 128, 3.0) - a.slice_hu(12.5, 128, 3.0)).mean()
    far = np.abs(a.slice_hu(10.0, 128, 3.0) - a.slice_hu(150.0, 128, 3.0)).mean()
    assert near < far


def test_acquire_noise_level_and_reconstruction_circle():
    flat = np.zeros((128, 128), np.float32)
    out = acquire(flat, np.random.default_rng(0), psf_sigma_px=0.0, noise_hu=12.0, fov_radius_px=60)
    assert out[64, 64] != 0 and out[0, 0] == -1024.0
    assert abs(float(out[34:94, 34:94].std()) - 12.0) < 1.0
