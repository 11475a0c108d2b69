"""The sparse-matrix forms of scikit-image's radon / iradon, and the low-dose simulation that uses them."""
import warnings

import numpy as np
import pytest
from skimage.transform import iradon, radon

from pipeline.synthetic import lowdose
from pipeline.synthetic.projector import MAX_SIDE, iradon_square, radon_square


@pytest.mark.parametrize("n", [64, 97])  # even and odd sides centre differently
def test_the_matrices_give_scikit_images_transforms_to_rounding(n):
    rng = np.random.default_rng(n)
    image = rng.random((n, n))
    yy, xx = np.mgrid[:n, :n]
    image[(yy - n // 2) ** 2 + (xx - n // 2) ** 2 > (n // 2) ** 2] = 0  # radon's circle
    theta = np.linspace(0.0, 180.0, n, endpoint=False)
    expected = radon(image, theta, circle=True)
    got = radon_square(image, theta)
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-9 * np.abs(expected).max()
    sinogram = rng.standard_normal((n, n // 2))  # fewer views than bins, too
    theta = np.linspace(0.0, 180.0, n // 2, endpoint=False)
    expected = iradon(sinogram, theta, circle=True, filter_name="ramp", output_size=n)
    got = iradon_square(sinogram, theta)
    assert got.shape == (n, n) and np.abs(got - expected).max() < 1e-9 * np.abs(expected).max()


def test_a_patchs_low_dose_noise_is_the_same_by_either_transform(monkeypatch):
    n = 148  # a training patch of 96 with its margin
    hu = np.full((n, n), -1000.0)
    yy, xx = np.mgrid[:n, :n]
    hu[(yy - 70) ** 2 / 55 ** 2 + (xx - 76) ** 2 / 45 ** 2 < 1] = 40.0
    hu[(yy - 60) ** 2 + (xx - 90) ** 2 < 100] = 900.0  # bone: streaks
    fast = lowdose.low_dose_noise_hu(hu, 0.7, 2e4, seed=5)
    monkeypatch.setattr(lowdose, "MAX_SIDE", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slow = lowdose.low_dose_noise_hu(hu, 0.7, 2e4, seed=5)
    assert fast.std() > 5.0  # HU of noise, not an empty field
    np.testing.assert_allclose(fast, slow, atol=1e-3)


def test_sizes_beyond_the_matrices_are_refused_with_the_reason():
    with pytest.raises(ValueError, match=f"square image of side at most {MAX_SIDE}, got \\(10, 12\\)"):
        radon_square(np.zeros((10, 12)), np.arange(10.0))
    with pytest.raises(ValueError, match="sinogram of at most"):
        iradon_square(np.zeros((MAX_SIDE + 1, 3)), np.arange(3.0))
