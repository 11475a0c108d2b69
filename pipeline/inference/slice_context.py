"""Slice context for a 2.5-D model: which neighbouring slices of its stack each slice is given.

A neighbour is a slice at the series' regular step, if that step is at most :data:`MAX_STEP_MM`
(thicker slices hold too little of the same anatomy). Where the step breaks (a gap, an uneven step,
a repeated position: :func:`neighbour_links`) and past the first and last slices, the nearest slice
on the linked side is repeated instead (replicated neighbours), so a one-slice series or an isolated
slice is given only itself: the model then sees what a 2-D model sees. Nothing is shifted silently:
a slice is never given a neighbour from across a break.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STEP_TOLERANCE = 0.25  # a step within +-25 % of the series' median step links two slices
# Slices farther apart are not neighbours: the context models were trained on 3.27 mm steps, and at
# 6.54 mm (thick slices, bench.context --thick 2) their neighbours cost 0.05 dB against none.
MAX_STEP_MM = 4.5


def typical_step_mm(positions_mm: Sequence[float] | None, n: int) -> float | None:
    """The median step between consecutive slices (mm), or None (fewer than two slices, or unknown)."""
    if n < 2 or positions_mm is None:
        return None
    pos = np.asarray(positions_mm, np.float64)
    if pos.shape != (n,):
        raise ValueError(f"expected {n} slice positions, got {pos.shape}")
    return float(np.median(np.abs(np.diff(pos))))


def neighbour_links(positions_mm: Sequence[float] | None, n: int, tolerance: float = STEP_TOLERANCE,
                    max_step_mm: float = MAX_STEP_MM) -> np.ndarray:
    """(n - 1,) bool: whether slices k and k + 1 (in stack order) are neighbours. ``positions_mm``:
    each slice's position along the stack's normal (None when unknown: no slice is linked). A series
    whose typical step exceeds ``max_step_mm`` has no neighbours at all (each slice alone)."""
    typical = typical_step_mm(positions_mm, n)
    if typical is None or typical <= 0 or typical > max_step_mm:
        return np.zeros(max(n - 1, 0), bool)
    steps = np.abs(np.diff(np.asarray(positions_mm, np.float64)))
    return np.abs(steps - typical) <= tolerance * typical


def context_indices(n: int, context: int, links: np.ndarray) -> np.ndarray:
    """(n, 2 * context + 1) stack indices: row k lists slice k's neighbours at offsets -context ..
    +context (k itself in the middle); across a broken link or past an end, the last linked slice
    on that side is repeated."""
    links = np.asarray(links, bool)
    if links.shape != (max(n - 1, 0),):
        raise ValueError(f"expected {max(n - 1, 0)} links for {n} slices, got {links.shape}")
    out = np.empty((n, 2 * context + 1), np.int64)
    for k in range(n):
        out[k, context] = k
        below = above = k
        for d in range(1, context + 1):
            if below > 0 and links[below - 1]:
                below -= 1
            if above < n - 1 and links[above]:
                above += 1
            out[k, context - d], out[k, context + d] = below, above
    return out
