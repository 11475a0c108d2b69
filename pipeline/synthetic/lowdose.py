"""Low-dose CT noise: Poisson photon noise on simulated projections, reconstructed by filtered
back projection (FBP), which gives the streaky, spatially correlated texture of real low-dose scans.

The noise-free image is not re-reconstructed: only the noise (FBP of noisy minus noise-free
projections) is added to it, so the reference stays aligned and unblurred.
"""
from __future__ import annotations

import numpy as np
from skimage.transform import iradon, radon

MU_WATER_PER_MM = 0.0192  # linear attenuation of water at about 70 keV (1/mm)


def low_dose_noise_hu(hu: np.ndarray, pixel_mm: float, i0: float, seed: int, electronic_sigma: float = 5.0,
                      views: int | None = None) -> np.ndarray:
    """Noise (HU) of a scan of ``hu`` ((N, N) float HU) with ``i0`` incident photons per detector
    bin and view, Gaussian electronic noise of ``electronic_sigma`` counts, ``views`` projections
    over 180 degrees (default: as many as pixels per side). Zero outside the reconstruction circle."""
    if hu.ndim != 2:
        raise ValueError(f"expected a 2-D image, got {hu.shape}")
    if hu.shape[0] != hu.shape[1]:  # pad with air to a square field of view, crop the noise back
        n = max(hu.shape)
        square = np.full((n, n), -1000.0, dtype=np.float64)
        r0, c0 = (n - hu.shape[0]) // 2, (n - hu.shape[1]) // 2
        square[r0:r0 + hu.shape[0], c0:c0 + hu.shape[1]] = hu
        noise = low_dose_noise_hu(square, pixel_mm, i0, seed, electronic_sigma, views)
        return noise[r0:r0 + hu.shape[0], c0:c0 + hu.shape[1]]
    n = hu.shape[0]
    if i0 <= 0 or pixel_mm <= 0:
        raise ValueError("i0 and pixel_mm must be positive")
    yy, xx = np.ogrid[:n, :n]
    inside = (yy - (n - 1) / 2) ** 2 + (xx - (n - 1) / 2) ** 2 <= (n / 2 - 2) ** 2  # inside radon's circle
    mu = np.where(inside, np.clip(MU_WATER_PER_MM * (1.0 + hu.astype(np.float64) / 1000.0), 0, None), 0.0) * pixel_mm
    theta = np.linspace(0.0, 180.0, views or n, endpoint=False)
    proj = radon(mu, theta, circle=True)
    rng = np.random.default_rng(seed)
    counts = rng.poisson(i0 * np.exp(-proj)) + rng.normal(0.0, electronic_sigma, proj.shape)
    noisy = -np.log(np.clip(counts, 1.0, None) / i0)
    noise = iradon(noisy - proj, theta, circle=True, filter_name="ramp", output_size=n)
    return (np.where(inside, noise, 0.0) / pixel_mm / MU_WATER_PER_MM * 1000.0).astype(np.float32)
