import math

import numpy as np
import pytest

from pipeline.qa.metrics import psnr, ssim


def test_psnr_hand_computed():
    ref = np.zeros((4, 4))
    img = ref.copy()
    img[0, 0] = 0.4  # MSE = 0.16 / 16 = 0.01 -> PSNR = 10 log10(1 / 0.01) = 20 dB
    assert psnr(ref, img) == pytest.approx(20.0, abs=1e-9)
    # the data range enters squared: range 2 adds 20 log10(2) dB
    assert psnr(ref, img, data_range=2.0) == pytest.approx(20.0 + 20 * math.log10(2), abs=1e-9)


def test_psnr_of_identical_images_is_infinite_and_shapes_must_match():
    a = np.random.default_rng(0).random((8, 8))
    assert psnr(a, a) == math.inf
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr(a, a[:4])


def test_ssim_is_one_for_identical_and_lower_for_noisy():
    rng = np.random.default_rng(1)
    a = rng.random((32, 32))
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, np.clip(a + 0.3 * rng.standard_normal(a.shape), 0, 1)) < 0.8


@pytest.mark.parametrize("shape", [(512, 512), (128, 96), (7, 9)])
def test_ssim_equals_scikit_image_structural_similarity(shape):
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(sum(shape))
    a = rng.random(shape)
    b = np.clip(a + 0.1 * rng.standard_normal(shape), 0, 1)
    for data_range in (1.0, 2.0):
        assert ssim(a, b, data_range) == pytest.approx(structural_similarity(a, b, data_range=data_range), abs=1e-12)


def test_ssim_refuses_mismatched_or_too_small_images():
    with pytest.raises(ValueError, match="shape mismatch"):
        ssim(np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim(np.zeros((6, 8)), np.zeros((6, 8)))
