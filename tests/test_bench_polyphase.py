"""bench.polyphase: the sub-images cover every pixel once, and make a smooth kernel's noise finer."""
import numpy as np
import pytest

from bench.polyphase import merge, phases
from pipeline.inference.noise_level import estimate_series
from pipeline.synthetic.kernel_noise import kernel_noise


def test_phases_cover_every_pixel_once_and_merge_inverts():
    img = np.arange(6 * 8, dtype=np.float32).reshape(6, 8)
    subs = phases(img)
    assert subs.shape == (4, 3, 4)
    assert sorted(subs.ravel().tolist()) == img.ravel().tolist()
    assert subs[1, 0, 0] == img[0, 1] and subs[2, 0, 0] == img[1, 0]
    np.testing.assert_array_equal(merge(subs), img)


def test_odd_size_is_refused_with_its_shape():
    with pytest.raises(ValueError, match=r"even height and width, got \(5, 8\)"):
        phases(np.zeros((5, 8), np.float32))


def test_smooth_kernel_noise_is_whiter_in_the_sub_images():
    hu = 40.0 + kernel_noise((256, 256), "soft", 30.0, seed=3)  # uniform soft tissue, blotchy noise
    whole = estimate_series([hu])
    sub = estimate_series(list(phases(hu)))
    assert whole.whiteness < 0.6
    assert sub.whiteness > whole.whiteness + 0.2
    assert sub.sigma_hu == pytest.approx(whole.sigma_hu, rel=0.25)
