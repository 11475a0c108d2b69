"""Slice geometry: the slice normal and the order of a stack along it (PS3.3 C.7.6.2)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal of a slice from ImageOrientationPatient (row cosines x column cosines)."""
    iop = np.asarray([float(v) for v in orientation], dtype=np.float64)
    if iop.shape != (6,) or not np.all(np.isfinite(iop)):
        raise ValueError(f"ImageOrientationPatient must be 6 finite numbers, got {list(orientation)}")
    n = np.cross(iop[:3], iop[3:])
    norm = float(np.linalg.norm(n))
    if norm < 1e-6:
        raise ValueError("ImageOrientationPatient row and column cosines are parallel")
    return n / norm


def position_along(normal: np.ndarray, position: Sequence[float]) -> float:
    """Projection of ImagePositionPatient (mm) on the slice normal."""
    ipp = np.asarray([float(v) for v in position], dtype=np.float64)
    if ipp.shape != (3,) or not np.all(np.isfinite(ipp)):
        raise ValueError(f"ImagePositionPatient must be 3 finite numbers, got {list(position)}")
    return float(np.dot(normal, ipp))


def same_orientation(a: Sequence[float], b: Sequence[float], tol: float = 1e-4) -> bool:
    return bool(np.allclose(np.asarray(a, float), np.asarray(b, float), atol=tol))
