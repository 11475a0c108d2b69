"""Image quality against a reference: PSNR and SSIM with an explicit data range."""
from __future__ import annotations

import math

import cv2
import numpy as np


def psnr(reference: np.ndarray, image: np.ndarray, data_range: float = 1.0) -> float:
    """10 log10(data_range^2 / MSE) in dB; ``inf`` for identical images."""
    ref = np.asarray(reference, dtype=np.float64)
    img = np.asarray(image, dtype=np.float64)
    if ref.shape != img.shape:
        raise ValueError(f"shape mismatch: {ref.shape} vs {img.shape}")
    mse = float(np.mean((ref - img) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(data_range**2 / mse)


SSIM_WIN = 7  # uniform window, as scikit-image's default
SSIM_K1, SSIM_K2 = 0.01, 0.03


def ssim(reference: np.ndarray, image: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM (Wang et al. 2004) with scikit-image's defaults: 7x7 uniform window, sample
    covariances, the mean taken away from a 3-pixel border (the same value as
    ``skimage.metrics.structural_similarity``, computed with OpenCV box filters in float64)."""
    x = np.asarray(reference, dtype=np.float64)
    y = np.asarray(image, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch: {x.shape} vs {y.shape}")
    if x.ndim != 2 or min(x.shape) < SSIM_WIN:
        raise ValueError(f"SSIM needs a 2-D image of at least {SSIM_WIN}x{SSIM_WIN}, got {x.shape}")

    def mean(a: np.ndarray) -> np.ndarray:
        return cv2.blur(a, (SSIM_WIN, SSIM_WIN), borderType=cv2.BORDER_REFLECT)  # border cropped below

    n = SSIM_WIN * SSIM_WIN
    cov_norm = n / (n - 1.0)
    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (SSIM_WIN - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean())
