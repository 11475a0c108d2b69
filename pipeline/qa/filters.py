"""The classical filters the QA report compares the model against (OpenCV, and scikit-image's
non-local means; float32 images in [0, 1])."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.errors import ConfigError

NLM_H_PER_SIGMA = 1.0  # non-local means' h per unit of noise std: best mean PSNR on the validation part (README)


@dataclass(frozen=True)
class FilterParams:
    """Filter settings. Defaults are each filter's best mean PSNR at the QA's default noise (Gaussian,
    sigma 0.07) on the real CT set's validation part under the fair yardstick (noise not clipped),
    as ``bench/quality.py`` tunes them, so the QA report is fair to the filters and its margins are
    the bench's. Non-local means needs the noise level: by default (``nlm_h`` None, ``auto``) it is
    told the noise estimated from the images it filters, the estimate the model gets."""

    gaussian_ksize: int = 5  # kernel side (odd)
    gaussian_sigma: float = 1.2  # pixels
    average_ksize: int = 3  # box side (odd)
    median_ksize: int = 5  # OpenCV supports 3 or 5 on float32
    bilateral_d: int = 9  # neighbourhood diameter (pixels)
    bilateral_sigma_color: float = 0.3  # in normalized intensity units
    bilateral_sigma_space: float = 1.5  # pixels
    nlm_h: float | None = None  # non-local means filtering strength (unit scale); None: NLM_H_PER_SIGMA x the noise estimate

    def __post_init__(self) -> None:
        for name in ("gaussian_ksize", "average_ksize"):
            k = getattr(self, name)
            if k < 1 or k % 2 == 0:
                raise ValueError(f"{name} must be a positive odd integer, got {k}")
        if self.median_ksize not in (3, 5):
            raise ValueError(f"median_ksize must be 3 or 5 for float32 images, got {self.median_ksize}")
        if self.gaussian_sigma <= 0 or self.bilateral_sigma_color <= 0 or self.bilateral_sigma_space <= 0 or self.bilateral_d < 1:
            raise ValueError("gaussian_sigma, bilateral_d and bilateral sigmas must be positive")
        if self.nlm_h is not None and not self.nlm_h > 0:
            raise ValueError(f"nlm_h must be positive or auto, got {self.nlm_h}")


def parse_nlm_h(value: str | float | None) -> float | None:
    """``auto`` (or None): told the noise estimate; else a positive number (unit scale)."""
    if value is None or str(value).strip().lower() == "auto":
        return None
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"nlm_h must be positive or auto, got {value!r}") from None


def classical_filters(p: FilterParams, noise_unit: float | None = None) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Method name -> function mapping an (H, W) float32 image in [0, 1] to the filtered image.
    ``noise_unit``: the estimated noise std (unit scale) of the images, which sets non-local means'
    ``h`` when ``p.nlm_h`` is None (auto)."""
    if p.nlm_h is None and (noise_unit is None or not math.isfinite(noise_unit)):
        raise ValueError("nlm_h auto needs the images' noise estimate")
    h = p.nlm_h if p.nlm_h is not None else max(NLM_H_PER_SIGMA * noise_unit, 1e-4)
    return {
        "gaussian": lambda im: cv2.GaussianBlur(im, (p.gaussian_ksize, p.gaussian_ksize), p.gaussian_sigma),
        "average": lambda im: cv2.blur(im, (p.average_ksize, p.average_ksize)),
        "median": lambda im: cv2.medianBlur(im, p.median_ksize),
        "bilateral": lambda im: cv2.bilateralFilter(im, p.bilateral_d, p.bilateral_sigma_color, p.bilateral_sigma_space),
        "nlm": lambda im: non_local_means(im, h),
    }


def non_local_means(im: np.ndarray, h: float) -> np.ndarray:
    """Non-local means (scikit-image, fast mode, 5x5 patches searched within 6 px), float32."""
    from skimage.restoration import denoise_nl_means

    return denoise_nl_means(im, h=h, patch_size=5, patch_distance=6, fast_mode=True).astype(np.float32)
