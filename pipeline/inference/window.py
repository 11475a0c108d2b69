"""HU <-> [0, 1] through an intensity window (what the model sees and what the QA measures)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """An HU interval [low, high] mapped linearly to [0, 1]."""

    low: float = -1000.0
    high: float = 1000.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.high <= self.low:
            raise ValueError(f"HU window must satisfy low < high (finite), got [{self.low}, {self.high}]")

    @property
    def width(self) -> float:
        return self.high - self.low

    def __str__(self) -> str:
        return f"[{self.low:g}, {self.high:g}] HU"


def hu_to_unit(hu: np.ndarray, window: Window, clip: bool = False) -> np.ndarray:
    """HU -> unit scale (low -> 0, high -> 1), float32. Without ``clip`` the map is linear and
    invertible, so values outside the window land outside [0, 1] instead of being lost."""
    unit = (np.asarray(hu, dtype=np.float32) - np.float32(window.low)) / np.float32(window.width)
    return np.clip(unit, 0.0, 1.0) if clip else unit


def unit_to_hu(unit: np.ndarray, window: Window) -> np.ndarray:
    """Inverse of :func:`hu_to_unit` (unclipped), float32 HU."""
    return np.asarray(unit, dtype=np.float32) * np.float32(window.width) + np.float32(window.low)
