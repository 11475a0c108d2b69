import math

import numpy as np
import pytest

from pipeline.metrics import psnr, ssim


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
