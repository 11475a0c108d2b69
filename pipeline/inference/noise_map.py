"""Where in a slice the noise is stronger: the noise level told to the model pixel by pixel.

CT noise is not stationary. Behind dense paths (shoulders, pelvis, the body centre of a large
patient) and at low dose it is several times what it is in the flattest soft tissue, where the series
estimate (:mod:`pipeline.inference.noise_level`) is measured. Told that one number everywhere, the
model leaves much of the stronger noise in place; told a higher one, it smooths the quiet parts.

:func:`relative_noise_map` gives the slice's noise relative to its estimate, pixel by pixel: per
15x15 block the median absolute response of the 3x3 Laplacian-like high-pass of the estimator's
``high-pass`` method (Immerkaer 1996, MAD form: robust to the few edge pixels of a block), divided
by that response's median over the blocks the slice's estimate is measured in (so those read 1),
clipped to [:data:`MIN_RATIO`, :data:`MAX_RATIO`], smoothed in the log over :data:`SMOOTH_BLOCKS`
blocks (the noise level varies slowly; the smoothing keeps one textured block from reading as
noise) and spread to the pixels bilinearly. The derived series tells the model the series' level
times this map with the setting ``noise_level_map = local``; ``series`` (the default) keeps one level
per series: on the held-out test part the map did not hold its validation gain (docs/model.md).

Only for noise about as fine as white noise or finer (the series' whiteness at least
:data:`MIN_WHITENESS`: white noise reads 1.0, low-dose FBP noise 1.04-1.2). The high-pass sees little
of the blotchy noise of smooth kernels (whiteness 0.3-0.7) and more of the anatomy's edges there: its
map would follow the anatomy, so such a series keeps one level.

The constants were chosen on the real validation slices (docs/model.md, "A local noise level").
"""
from __future__ import annotations

import cv2
import numpy as np

from pipeline.errors import ConfigError
from pipeline.inference.noise_level import BLOCK_PX, flat_blocks, highpass, image_blocks

MODES = ("local", "series")
DEFAULT_MODE = "series"
MIN_RATIO = 0.5
MAX_RATIO = 2.5
SMOOTH_BLOCKS = 5.0  # Gaussian sigma of the smoothing, in blocks (75 px)
MIN_WHITENESS = 0.9  # a series with blotchier noise than this is told one level


def applies(whiteness: float) -> bool:
    """Whether noise of this whiteness (:class:`pipeline.inference.noise_level.SeriesNoise`) gets a map."""
    return whiteness >= MIN_WHITENESS


def relative_noise_map(hu: np.ndarray, smooth_blocks: float = SMOOTH_BLOCKS) -> np.ndarray:
    """(H, W) float32: the noise of the (H, W) HU slice ``hu`` (as the model gets it, noise and all)
    relative to the level where its estimate is measured; all ones for a slice too small for three
    blocks across or with no block to measure in (its estimate is then the whole slice's).
    ``smooth_blocks``: the smoothing's Gaussian sigma in blocks."""
    img = np.asarray(hu, np.float32)
    h, w = img.shape
    ones = np.ones((h, w), np.float32)
    if min(h, w) < 3 * BLOCK_PX:
        return ones
    _, selected = flat_blocks(img)
    if selected is None:
        return ones
    response = np.median(image_blocks(np.abs(highpass(img))), axis=-1)
    reference = float(np.median(response[selected]))
    if not reference > 0:  # flat blocks of one value (padding, a synthetic slice): nothing to scale by
        return ones
    ratio = np.clip(response / reference, MIN_RATIO, MAX_RATIO).astype(np.float32)
    smooth = np.exp(cv2.GaussianBlur(np.log(ratio), (0, 0), smooth_blocks, borderType=cv2.BORDER_REPLICATE))
    rows, cols = smooth.shape
    # block centres sit at BLOCK_PX * (i + 0.5): resize puts them there; pixels past the last block repeat it
    grid = cv2.resize(smooth, (cols * BLOCK_PX, rows * BLOCK_PX), interpolation=cv2.INTER_LINEAR)
    return np.pad(grid, ((0, h - grid.shape[0]), (0, w - grid.shape[1])), mode="edge")


def check_mode(mode: str) -> str:
    """``mode`` normalized, or ConfigError in one line naming the choices."""
    key = str(mode).strip().lower()
    if key not in MODES:
        raise ConfigError(f"noise_level_map must be one of {', '.join(MODES)}, got {mode!r}")
    return key
