"""Image quality against a reference: PSNR and SSIM with an explicit data range."""
from __future__ import annotations

import math

import numpy as np
from skimage.metrics import structural_similarity


def psnr(reference: np.ndarray, image: np.ndarray, data_range: float = 1.0) -> float:
    """10 log10(data_range^2 / MSE) in dB; ``inf`` for identical images."""
    ref = np.asarray(reference, dtype=np.float64)
    img = np.asarray(image, dtype=np.float64)
    if ref.shape != img.shape:
        raise ValueError(f"shape mismatch: {ref.shape} vs {img.shape}")
    mse = float(np.mean((ref - img) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(data_range**2 / mse)


def ssim(reference: np.ndarray, image: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM (Wang et al. 2004, 7x7 uniform window as scikit-image's default)."""
    return float(structural_similarity(np.asarray(reference, np.float64), np.asarray(image, np.float64),
                                       data_range=data_range))
