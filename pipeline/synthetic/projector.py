"""scikit-image's parallel-beam ``radon`` (``circle=True``) and ramp-filtered ``iradon`` as sparse
matrices, built once per image size and set of angles.

Both transforms are linear: ``radon`` rotates the image by bilinear interpolation and sums each
column, ``iradon`` ramp-filters each projection and back-projects it by linear interpolation. Written
out as matrices, a simulation on a small square (a training patch with its margin) takes a sparse
product instead of one image warp per angle, several times faster, with the same result to rounding
(the tests compare them with scikit-image's own). Large squares (whole slices) keep scikit-image:
their matrices would not fit in memory."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import sparse
from scipy.fft import fft, ifft

MAX_SIDE = 160  # largest square side given matrices (148, a training patch with its margin: 131 MiB for both)


def _ramp(size: int) -> np.ndarray:
    """The ramp filter in the Fourier domain, as ``iradon`` builds it (from the spatial-domain
    ramp's samples, so that it has no DC offset), for ``size`` (a power of 2) samples."""
    k = np.concatenate((np.arange(1, size / 2 + 1, 2, dtype=int), np.arange(size / 2 - 1, 0, -2, dtype=int)))
    f = np.zeros(size)
    f[0] = 0.25
    f[1::2] = -1 / (np.pi * k) ** 2
    return 2 * np.real(fft(f))


def _bilinear(rows: np.ndarray, cols: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(output index, input pixel, weight) of bilinear interpolation at (``rows``, ``cols``) of an
    n x n image, corners outside the image dropped (they read 0, ``warp``'s constant mode): floor and
    ceil of each coordinate, as scikit-image interpolates."""
    r0, c0 = np.floor(rows), np.floor(cols)
    r1, c1 = np.ceil(rows), np.ceil(cols)
    dr, dc = rows - r0, cols - c0
    index = np.arange(rows.size)
    out_i, out_p, out_w = [], [], []
    for r, c, w in ((r0, c0, (1 - dr) * (1 - dc)), (r0, c1, (1 - dr) * dc),
                    (r1, c0, dr * (1 - dc)), (r1, c1, dr * dc)):
        ok = (r >= 0) & (r < n) & (c >= 0) & (c < n) & (w != 0)
        out_i.append(index[ok])
        out_p.append(r[ok].astype(np.int64) * n + c[ok].astype(np.int64))
        out_w.append(w[ok])
    return np.concatenate(out_i), np.concatenate(out_p), np.concatenate(out_w)


@lru_cache(maxsize=2)
def _radon_matrix(n: int, theta: tuple[float, ...]) -> sparse.csr_matrix:
    """(n * len(theta), n * n): sinogram (detector-major, as ``radon`` returns it) of an n x n image."""
    centre = n // 2
    y, x = np.mgrid[:n, :n].astype(np.float64)  # the rotated image's rows and columns
    rows, cols, vals = [], [], []
    for a, angle in enumerate(np.deg2rad(np.asarray(theta, np.float64))):
        cos_a, sin_a = np.cos(angle), np.sin(angle)
        src_c = cos_a * x + sin_a * y - centre * (cos_a + sin_a - 1)
        src_r = -sin_a * x + cos_a * y - centre * (cos_a - sin_a - 1)
        i, p, w = _bilinear(src_r.ravel(), src_c.ravel(), n)
        detector = (i % n)  # the rotated image's column: the sum runs down its rows
        rows.append(detector * len(theta) + a)
        cols.append(p)
        vals.append(w)
    m = sparse.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(n * len(theta), n * n))
    return m.tocsr()


@lru_cache(maxsize=2)
def _backprojection_matrix(n: int, theta: tuple[float, ...]) -> sparse.csr_matrix:
    """(n * n, d * len(theta)), d = :func:`_detector_bins` (n): ``iradon``'s back-projection (linear
    interpolation, zero beyond the detector, zero outside the reconstruction circle, times pi / (2
    angles)) of a filtered sinogram of d bins."""
    d = _detector_bins(n)
    radius = n // 2
    xpr, ypr = np.mgrid[:n, :n] - radius
    inside = (xpr ** 2 + ypr ** 2 <= radius ** 2).ravel()
    pixels = np.flatnonzero(inside)
    xpr, ypr = xpr.ravel()[inside].astype(np.float64), ypr.ravel()[inside].astype(np.float64)
    rows, cols, vals = [], [], []
    for a, angle in enumerate(np.deg2rad(np.asarray(theta, np.float64))):
        t = ypr * np.cos(angle) - xpr * np.sin(angle) + d // 2  # in detector bins from the first
        ok = (t >= 0) & (t <= d - 1)
        j = np.minimum(np.floor(t[ok]).astype(np.int64), d - 2)
        f = t[ok] - j
        for bins, w in ((j, 1 - f), (j + 1, f)):
            rows.append(pixels[ok])
            cols.append(bins * len(theta) + a)
            vals.append(w)
    m = sparse.coo_matrix((np.concatenate(vals) * np.pi / (2 * len(theta)),
                           (np.concatenate(rows), np.concatenate(cols))), shape=(n * n, d * len(theta)))
    return m.tocsr()


def _detector_bins(n: int) -> int:
    """The bins ``iradon`` filters and back-projects for n: the sinogram widened to the square's
    diagonal (zeros before filtering, not after it)."""
    return int(np.ceil(np.sqrt(2) * n))


def radon_square(image: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """``skimage.transform.radon(image, theta, circle=True)`` of a square image of side at most
    :data:`MAX_SIDE`: (n, len(theta))."""
    n = _side(image)
    return (_radon_matrix(n, tuple(map(float, theta))) @ image.astype(np.float64).ravel()).reshape(n, len(theta))


def iradon_square(sinogram: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """``skimage.transform.iradon(sinogram, theta, circle=True, filter_name="ramp")`` of an (n,
    len(theta)) sinogram, n at most :data:`MAX_SIDE`: (n, n)."""
    n = sinogram.shape[0]
    if n > MAX_SIDE or sinogram.shape[1] != len(theta):
        raise ValueError(f"expected a sinogram of at most {MAX_SIDE} bins and {len(theta)} angles, "
                         f"got {sinogram.shape}")
    d = _detector_bins(n)
    size = max(64, int(2 ** np.ceil(np.log2(2 * d))))
    padded = np.zeros((size, sinogram.shape[1]))
    first = d // 2 - n // 2
    padded[first:first + n] = sinogram
    filtered = np.real(ifft(fft(padded, axis=0) * _ramp(size)[:, None], axis=0)[:d])
    return (_backprojection_matrix(n, tuple(map(float, theta))) @ filtered.ravel()).reshape(n, n)


def _side(image: np.ndarray) -> int:
    if image.ndim != 2 or image.shape[0] != image.shape[1] or image.shape[0] > MAX_SIDE:
        raise ValueError(f"expected a square image of side at most {MAX_SIDE}, got {image.shape}")
    return image.shape[0]
