"""Blotchy noise denoised a second time through the 2x2 polyphase sub-images of each lone slice.

The noise of a smooth reconstruction kernel is blotchy: most of its power lies at 0.05-0.1 cycles
per pixel, where a model trained mostly on white noise takes it for anatomy. Every other pixel in
each direction (the four 2x2 polyphase sub-images of a slice) doubles those frequencies: in each
sub-image the same noise is finer and closer to white (soft-kernel copies read whiteness 0.33-0.70,
their sub-images 0.78-0.86). With ``blotchy_pass = mean``, in a series whose estimated whiteness is
below :data:`MAX_WHITENESS`, each slice that runs alone (a 2-D model's every slice; a context
model's slices with no neighbour on either side) is denoised twice, directly and through its
sub-images (told the series' std as white noise), and the two results are averaged; edge handling
and strength work on that mean. It costs a second model pass on those slices.

Measured on the validation part (docs/model.md, "Blotchy noise through the 2x2 polyphase
sub-images"), the threshold chosen there:

* lone slices: +0.3 to +0.8 dB on smooth-kernel noise, on the real slices and on the slices of the
  validation volumes run alone; on white and low-dose noise -0.8 to -1.0 dB, hence the gate;
* standard-kernel noise (whiteness 0.76-0.92) gains on the real slices and loses on the volumes
  (-0.19 dB): above the threshold, which lies between the soft copies (at most 0.70) and those;
* slices with neighbours: the context network with its neighbours loses with it (-0.09 dB on
  smooth-kernel noise, -0.39 on standard), so they are left as they are.

On the test part, scored once after those choices, smooth-kernel noise at 60 HU: -0.17 dB (six of
seven gated slices +0.11 to +0.78, a nearly empty one -4.60 at 58 dB; SSIM +0.008). With twice the
model's time on those slices (above the 1/10 of BM3D's bound) that keeps it off by default.

Noise that blotchy never gets a local level map (:data:`pipeline.inference.noise_map.MIN_WHITENESS`
is 0.9), so the two never meet.
"""
from __future__ import annotations

import numpy as np

from pipeline.errors import ConfigError

MODES = ("mean", "off")
DEFAULT_MODE = "off"  # a second model pass doubles the CPU time of those slices: asked for, not given
MAX_WHITENESS = 0.75  # a series with finer noise than this is denoised directly only


def check_mode(mode: str) -> str:
    """``mean`` or ``off`` (case and spaces ignored); ``ConfigError`` in one line otherwise."""
    key = str(mode).strip().lower()
    if key not in MODES:
        raise ConfigError(f"blotchy_pass must be one of {', '.join(MODES)}, got {mode!r}")
    return key


def applies(whiteness: float) -> bool:
    """Whether a series whose noise reads this whiteness gets the second pass (NaN: no)."""
    return bool(whiteness < MAX_WHITENESS)


def phases(stack: np.ndarray) -> list[np.ndarray]:
    """(N, H, W) -> the four 2x2 polyphase sub-stacks, (N, ceil(H/2), ceil(W/2)) each, in the order
    (row, column) offsets (0, 0), (0, 1), (1, 0), (1, 1). An odd height or width is first extended
    by repeating its last row or column (cut off again by :func:`merge`)."""
    h, w = stack.shape[-2:]
    if h % 2 or w % 2:
        stack = np.pad(stack, [(0, 0)] * (stack.ndim - 2) + [(0, h % 2), (0, w % 2)], mode="edge")
    return [np.ascontiguousarray(stack[..., i::2, j::2]) for i in range(2) for j in range(2)]


def merge(parts: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """The inverse of :func:`phases`: the four sub-stacks back into (N, H, W) with (H, W) = ``shape``."""
    h, w = shape
    first = parts[0]
    out = np.empty((*first.shape[:-2], first.shape[-2] * 2, first.shape[-1] * 2), first.dtype)
    for part, (i, j) in zip(parts, ((0, 0), (0, 1), (1, 0), (1, 1))):
        out[..., i::2, j::2] = part
    return out[..., :h, :w]
