"""Low-dose CT noise: Poisson photon noise on simulated projections, reconstructed by filtered
back projection (FBP), which gives the streaky, spatially correlated texture of real low-dose scans.

The noise-free image is not re-reconstructed: only the noise (FBP of noisy minus noise-free
projections) is added to it, so the reference stays aligned and unblurred.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from skimage.transform import iradon, radon

from pipeline.synthetic.projector import MAX_SIDE, iradon_square, radon_square

MU_WATER_PER_MM = 0.0192  # linear attenuation of water at about 70 keV (1/mm)
AIR_HU_ABOVE = -900.0  # a pixel above this is tissue, not air


def reconstruction_circle(h: int, w: int) -> np.ndarray:
    """The pixels of an (h, w) image that :func:`low_dose_noise_hu` reconstructs: inside radon's
    circle of the square the image is centred in."""
    n = max(h, w)
    yy, xx = np.ogrid[:h, :w]
    return (yy + (n - h) // 2 - (n - 1) / 2) ** 2 + (xx + (n - w) // 2 - (n - 1) / 2) ** 2 <= (n / 2 - 2) ** 2


def _in_air_square(hu: np.ndarray, side: int, simulate: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``simulate`` run on ``hu`` centred in a ``side`` x ``side`` square of air, cropped back."""
    h, w = hu.shape
    square = np.full((side, side), -1000.0, dtype=np.float64)
    r0, c0 = (side - h) // 2, (side - w) // 2
    square[r0:r0 + h, c0:c0 + w] = hu
    return simulate(square)[r0:r0 + h, c0:c0 + w]


def low_dose_noise_hu(hu: np.ndarray, pixel_mm: float, i0: float, seed: int, electronic_sigma: float = 5.0,
                      views: int | None = None) -> np.ndarray:
    """Noise (HU) of a scan of ``hu`` ((N, N) float HU) with ``i0`` incident photons per detector
    bin and view, Gaussian electronic noise of ``electronic_sigma`` counts, ``views`` projections
    over 180 degrees (default: as many as pixels per side). Zero outside the reconstruction circle."""
    if hu.ndim != 2:
        raise ValueError(f"expected a 2-D image, got {hu.shape}")
    if hu.shape[0] != hu.shape[1]:  # pad with air to a square field of view, crop the noise back
        return _in_air_square(hu, max(hu.shape), lambda sq: low_dose_noise_hu(sq, pixel_mm, i0, seed,
                                                                              electronic_sigma, views))
    n = hu.shape[0]
    if i0 <= 0 or pixel_mm <= 0:
        raise ValueError("i0 and pixel_mm must be positive")
    inside = reconstruction_circle(n, n)
    mu = np.where(inside, np.clip(MU_WATER_PER_MM * (1.0 + hu.astype(np.float64) / 1000.0), 0, None), 0.0) * pixel_mm
    theta = np.linspace(0.0, 180.0, views or n, endpoint=False)
    small = n <= MAX_SIDE  # the same transforms as sparse matrices: several times faster on a patch
    proj = radon_square(mu, theta) if small else radon(mu, theta, circle=True)
    rng = np.random.default_rng(seed)
    counts = rng.poisson(i0 * np.exp(-proj)) + rng.normal(0.0, electronic_sigma, proj.shape)
    noisy = -np.log(np.clip(counts, 1.0, None) / i0)
    noise = (iradon_square(noisy - proj, theta) if small
             else iradon(noisy - proj, theta, circle=True, filter_name="ramp", output_size=n))
    return (np.where(inside, noise, 0.0) / pixel_mm / MU_WATER_PER_MM * 1000.0).astype(np.float32)


def low_dose_noise_whole_hu(hu: np.ndarray, pixel_mm: float, i0: float, seed: int,
                            electronic_sigma: float = 5.0) -> np.ndarray:
    """Low-dose noise over the whole of a slice, as a scanner's image has it.
    :func:`low_dose_noise_hu` leaves the corners outside its reconstruction circle without noise:
    where tissue lies there (a table, arms, a body wider than the circle), the slice is padded with
    air to the square whose reconstruction circle holds all of it (side n x sqrt(2) + 4) and the
    noise cropped back; a slice with only air in its corners is simulated as it is (the same noise
    as :func:`low_dose_noise_hu`)."""
    if hu.ndim != 2:
        raise ValueError(f"expected a 2-D image, got {hu.shape}")
    h, w = hu.shape
    if not np.any(hu[~reconstruction_circle(h, w)] > AIR_HU_ABOVE):
        return low_dose_noise_hu(hu, pixel_mm, i0, seed, electronic_sigma)
    return _in_air_square(hu, int(np.ceil(np.hypot(h, w))) + 4,
                          lambda sq: low_dose_noise_hu(sq, pixel_mm, i0, seed, electronic_sigma))
