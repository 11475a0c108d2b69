"""The noise level of a scan, in HU, from its images alone: per slice, then one robust value per
series (the median over its slices; the noise follows the tube-current modulation from slice to
slice, so the series' figure comes with the range it spans).

Per slice, the physicist's measure made to work at any noise level: the std of the pixel values in
square blocks of uniform tissue (a plane fitted and taken away, so a slow gradient is not counted as
noise), over the flattest blocks. A block's structure is the std of the low-passed slice inside it;
the flattest quarter of the candidate blocks is kept, and the slice's noise is the median of their
stds. Candidates, in order of preference:

1. ``soft tissue``: blocks of mean -20..120 HU with no air nearby (the same class as the
   uniform-region measure of :mod:`pipeline.qa.scan_measures`, so on scans as stored they agree);
2. ``any tissue``: blocks inside the scan at any density (lung, fat, bone, a phantom's insert), for
   slices with too little soft tissue (lung-only crops, phantoms);
3. ``air``: blocks of air (mean below -950 HU, not padding: no quarter of the block at one value)
   whose structure is small against their own std (noise, not an edge), for a slice with no tissue
   at all (above the head, an empty field of view). Noise in air need not be the noise in tissue,
   so such a slice is flagged ``low`` confidence;
4. ``high-pass``: the median absolute response of a Laplacian-like 3x3 filter over the scan
   (Immerkaer 1996, MAD form), for a slice with no flat block at all. It assumes white noise and
   reads correlated noise low: such a slice is flagged ``low`` confidence.

Blocks are 15x15 px; structure is measured on the slice blurred with a Gaussian of 3 px. Only the
ranking uses the structure, never a fixed threshold, so the estimate holds from 3 HU heads to
200 HU noisy copies. What a series estimate is worth is said by :attr:`SeriesNoise.confidence`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

BLOCK_PX = 15
LOWPASS_PX = 3.0
FLAT_SHARE = 0.25  # the flattest quarter of the candidate blocks
MIN_BLOCKS = 4  # fewer candidates than this: the class is not used
SOFT_TISSUE_HU = (-20.0, 120.0)
ANY_TISSUE_HU = (-950.0, 3000.0)  # inside the scan: not air outside the body, not padding
AIR_NEAR_HU = -300.0  # soft tissue with air (or padding) this close is an outline, not a uniform region
AIR_FLAT = 0.5  # an air block's structure below this share of its std: noise only, no edge in it
METHODS = ("soft tissue", "any tissue", "air", "high-pass")


@dataclass(frozen=True)
class SliceNoise:
    """One slice: ``sigma_hu`` (NaN for an empty slice), the ``method`` that gave it (one of
    :data:`METHODS`), the number of blocks it rests on (0 for ``high-pass``) and the noise's
    ``whiteness``: how fine the noise is in its finest direction, the largest std that a second
    difference along a row, a column or a diagonal reads (each calibrated for white noise) over the
    block std, in the same blocks: about 1 for white noise, lower for the blotchy noise of smooth
    reconstruction kernels, above 1 for ramp-filtered (FBP) noise and for streaks, which are fine
    across though smooth along (a kernel that needs fineness in both directions reads them as
    blotchy)."""

    sigma_hu: float
    method: str
    blocks: int
    whiteness: float = 1.0


@dataclass(frozen=True)
class SeriesNoise:
    """A series: the median of its slices' estimates (HU), their 10th-90th percentile range, how
    many slices were measured and by which methods, and how sure the estimate is."""

    sigma_hu: float
    low_hu: float
    high_hu: float
    slices: int
    methods: dict[str, int]
    whiteness: float = 1.0

    @property
    def confidence(self) -> str:
        """``high``: most slices measured in uniform soft tissue, within twofold of each other;
        ``medium``: in uniform blocks of other tissue (lung, phantoms), a mix, or a wider spread;
        ``low``: mostly in air or by the white-noise high-pass fallback (no tissue, no flat region),
        or no slice measured (:attr:`doubt` says which)."""
        if not self.slices or not math.isfinite(self.sigma_hu):
            return "low"
        share = {m: self.methods.get(m, 0) / self.slices for m in METHODS}
        if share["air"] + share["high-pass"] > 0.5:
            return "low"
        if share["soft tissue"] >= 0.5 and self.high_hu <= 2.0 * max(self.low_hu, 1e-6):
            return "high"
        return "medium"

    @property
    def doubt(self) -> str:
        """Why the confidence is ``low`` (empty when it is not)."""
        if self.confidence != "low":
            return ""
        if not self.slices or not math.isfinite(self.sigma_hu):
            return "no slice could be measured"
        if self.methods.get("air", 0) >= self.methods.get("high-pass", 0):
            return "no tissue: measured in air"
        return "no uniform region found"

    def describe(self) -> str:
        methods = ", ".join(f"{m} {n}" for m, n in self.methods.items() if n)
        return (f"noise {self.sigma_hu:.1f} HU (slices {self.low_hu:.1f}-{self.high_hu:.1f} HU, {self.slices} "
                f"measured: {methods}; confidence {self.confidence})")

    def as_dict(self) -> dict:
        return {"sigma_hu": round(self.sigma_hu, 2), "slice_range_hu": [round(self.low_hu, 2), round(self.high_hu, 2)],
                "slices": self.slices, "methods": dict(self.methods), "confidence": self.confidence,
                "estimator": "median over slices of the std in the flattest uniform blocks "
                             "(pipeline/inference/noise_level.py)"}


def _plane_basis(n: int) -> np.ndarray:
    """An orthonormal basis of the constant and the two linear ramps over an n x n block, (3, n*n)."""
    yy, xx = np.mgrid[:n, :n].astype(np.float64)
    q, _ = np.linalg.qr(np.stack([np.ones(n * n), yy.ravel(), xx.ravel()], axis=1))
    return q.T


_BASIS = _plane_basis(BLOCK_PX)


def image_blocks(img: np.ndarray) -> np.ndarray:
    """(rows, cols, BLOCK_PX * BLOCK_PX) view of the aligned blocks of ``img``."""
    h, w = (s // BLOCK_PX * BLOCK_PX for s in img.shape)
    b = img[:h, :w].reshape(h // BLOCK_PX, BLOCK_PX, w // BLOCK_PX, BLOCK_PX)
    return b.transpose(0, 2, 1, 3).reshape(h // BLOCK_PX, w // BLOCK_PX, BLOCK_PX * BLOCK_PX)


def _detrended_std(blocks: np.ndarray) -> np.ndarray:
    """Std of each block (last axis) after the least-squares plane is taken away (n - 3 degrees of
    freedom, so white noise reads its std whatever the plane)."""
    x = blocks.astype(np.float64)
    fit = (x @ _BASIS.T) @ _BASIS
    n = x.shape[-1]
    return np.sqrt(((x - fit) ** 2).sum(-1) / (n - 3))


_HIGHPASS = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32) / 6.0  # white noise of std s reads s


_SECOND_DIFFERENCES = tuple(k.astype(np.float32) / np.sqrt(6.0) for k in (  # white noise of std s reads s
    np.array([[1, -2, 1]]), np.array([[1], [-2], [1]]), np.diag([1, -2, 1]), np.fliplr(np.diag([1, -2, 1])).copy()))


def _filter(hu: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return cv2.filter2D(np.asarray(hu, np.float32), cv2.CV_32F, kernel, borderType=cv2.BORDER_REFLECT)


def highpass(hu: np.ndarray) -> np.ndarray:
    return _filter(hu, _HIGHPASS)


def _whiteness(img: np.ndarray, selected: tuple[np.ndarray, np.ndarray], sigma: float) -> float:
    """The finest direction's second-difference std over ``sigma``, medians over the ``selected``
    blocks (see :class:`SliceNoise`)."""
    if sigma <= 0:
        return 1.0
    return max(float(np.median(image_blocks(_filter(img, k)).std(-1)[selected])) for k in _SECOND_DIFFERENCES) / sigma


def noise_whiteness(noise: np.ndarray) -> float:
    """The whiteness of a field of noise alone (no anatomy): its finest direction's second-difference
    std over its std, as :func:`_whiteness` reads it in a slice's flat blocks (1 for white noise; what
    a training patch's noise is told, ``models.training`` with ``whiteness_map``)."""
    field = np.asarray(noise, np.float32)
    std = float(field.std())
    if std <= 0:
        return 1.0
    return max(float(_filter(field, k)[1:-1, 1:-1].std()) for k in _SECOND_DIFFERENCES) / std


def highpass_sigma(hu: np.ndarray, inside: np.ndarray | None = None) -> float:
    """White-noise std from the median absolute 3x3 Laplacian-like response (Immerkaer's kernel),
    over ``inside`` pixels (default: all)."""
    resp = np.abs(highpass(hu))
    vals = resp[1:-1, 1:-1][inside[1:-1, 1:-1]] if inside is not None else resp[1:-1, 1:-1].ravel()
    vals = vals[vals > 0] if np.count_nonzero(vals) > vals.size // 2 else vals  # constant padding reads 0
    return float(np.median(vals) / 0.6745) if vals.size else math.nan


def block_noise(hu: np.ndarray) -> np.ndarray:
    """(rows, cols) noise std (HU) of each aligned block of ``hu``, a plane taken away."""
    return _detrended_std(image_blocks(np.asarray(hu, np.float32)))


def _padding(blocks: np.ndarray) -> np.ndarray:
    """(rows, cols) whether a block is largely one repeated value (padding, values clipped at the
    scanner's lowest): its median equals its lower or its upper quartile."""
    q = np.percentile(blocks, [25, 50, 75], axis=-1)
    return (q[0] == q[1]) | (q[1] == q[2])


def candidates(hu: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """The block class a slice is measured in (``soft tissue``, ``any tissue`` or ``air``, the first
    with :data:`MIN_BLOCKS` blocks; ``high-pass`` when none has), its (rows, cols) block mask, and each
    block's structure: the std (HU) of the low-passed slice in the block."""
    img = np.asarray(hu, np.float32)
    low = cv2.GaussianBlur(img, (0, 0), LOWPASS_PX)
    smooth = cv2.GaussianBlur(img, (0, 0), 2.0)
    mean = image_blocks(img).mean(-1)
    structure = image_blocks(low).std(-1)
    # air within a block around a soft-tissue block: the block lies on the body outline
    near_min = cv2.erode(smooth, np.ones((3 * BLOCK_PX, 3 * BLOCK_PX), np.uint8), borderType=cv2.BORDER_REPLICATE)
    air_near = image_blocks(near_min).min(-1) < AIR_NEAR_HU
    lowest = image_blocks(smooth).min(-1)
    classes = {"soft tissue": lambda: (mean >= SOFT_TISSUE_HU[0]) & (mean <= SOFT_TISSUE_HU[1]) & ~air_near,
               "any tissue": lambda: (mean >= ANY_TISSUE_HU[0]) & (mean <= ANY_TISSUE_HU[1]) & (lowest > ANY_TISSUE_HU[0]),
               "air": lambda: (mean < ANY_TISSUE_HU[0]) & ~_padding(image_blocks(img)) & (structure < AIR_FLAT * block_noise(img))}
    for method, mask_of in classes.items():
        mask = mask_of()
        if int(mask.sum()) >= MIN_BLOCKS:
            return method, mask, structure
    return "high-pass", np.zeros_like(mean, bool), structure


def flat_blocks(img: np.ndarray) -> tuple[str, tuple[np.ndarray, np.ndarray] | None]:
    """The blocks a slice's noise is measured in: its candidate class (:func:`candidates`) and the
    (rows, cols) of that class's flattest :data:`FLAT_SHARE` (at least :data:`MIN_BLOCKS`); None
    when no class has blocks (``high-pass``)."""
    method, mask, structure = candidates(img)
    n = int(mask.sum())
    if not n:
        return method, None
    keep = max(MIN_BLOCKS, int(round(n * FLAT_SHARE)))
    order = np.argsort(structure[mask], kind="stable")[:keep]
    rows, cols = np.nonzero(mask)
    return method, (rows[order], cols[order])


def slice_noise(hu: np.ndarray) -> SliceNoise:
    """The noise std (HU) of one (H, W) slice in HU, as stored or with noise added (not clipped)."""
    img = np.asarray(hu, np.float32)
    if img.ndim != 2:
        raise ValueError(f"expected one (H, W) slice, got shape {img.shape}")
    if min(img.shape) >= 3 * BLOCK_PX:
        method, selected = flat_blocks(img)
        if selected is not None:
            sigma = float(np.median(block_noise(img)[selected]))
            return SliceNoise(sigma, method, len(selected[0]), _whiteness(img, selected, sigma))
        smooth = cv2.GaussianBlur(img, (0, 0), 2.0)
        inside = (smooth > ANY_TISSUE_HU[0]) & (smooth < ANY_TISSUE_HU[1])
        return SliceNoise(highpass_sigma(img, inside if inside.sum() > img.size // 10 else None), "high-pass", 0)
    return SliceNoise(highpass_sigma(img), "high-pass", 0)


def series_noise(slices: list[SliceNoise]) -> SeriesNoise:
    """One value for a series: the median of its slices' estimates, with their 10-90 % range."""
    values = np.array([s.sigma_hu for s in slices if math.isfinite(s.sigma_hu)], np.float64)
    methods = {m: sum(1 for s in slices if s.method == m and math.isfinite(s.sigma_hu)) for m in METHODS}
    if not values.size:
        return SeriesNoise(math.nan, math.nan, math.nan, 0, methods)
    white = [s.whiteness for s in slices if math.isfinite(s.sigma_hu) and math.isfinite(s.whiteness)]
    return SeriesNoise(float(np.median(values)), float(np.percentile(values, 10)), float(np.percentile(values, 90)),
                       int(values.size), methods, float(np.median(white)) if white else 1.0)


def estimate_series(stack: np.ndarray | list[np.ndarray]) -> SeriesNoise:
    """The series estimate of a stack of (H, W) HU slices."""
    return series_noise([slice_noise(s) for s in stack])


def sample_positions(n: int, count: int = 9) -> list[int]:
    """Up to ``count`` stack positions spread evenly over a series of ``n`` slices, each centred in
    its share of the stack: the slices the series estimate is taken from."""
    if n <= count:
        return list(range(n))
    return [int((k + 0.5) * n / count) for k in range(count)]
