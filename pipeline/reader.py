"""Load a stack found by :mod:`pipeline.discovery` as ordered slices in HU.

Files are opened read-only and never modified. A stack that cannot be loaded raises
:class:`~pipeline.errors.InputError` naming the file and the reason.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from .codecs import missing_decoder_reason
from .discovery import ScanResult, SeriesRef, Skipped, StudyScan, read_dicom, scan
from .errors import InputError
from .geometry import position_along, same_orientation, slice_normal
from .selection import DERIVED_MARKER

log = logging.getLogger(__name__)

__all__ = ["DERIVED_MARKER", "ScanResult", "Series", "SeriesRef", "Skipped", "StudyScan", "load_series", "scan", "to_hu"]


@dataclass
class Series:
    """An ordered stack. ``hu`` is (slices, rows, columns) float32 HU; ``datasets`` are the source
    headers in the same order (pixel data dropped after decoding)."""

    study_uid: str
    series_uid: str
    datasets: list[Dataset]
    paths: list[Path]
    hu: np.ndarray
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.datasets)


def _float(ds: Dataset, keyword: str, default: float | None, path: Path) -> float:
    value = ds.get(keyword)
    if value is None or value == "":
        if default is None:
            raise InputError(path, f"{keyword} missing")
        return default
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InputError(path, f"{keyword} {value!r} is not a number") from None
    if not math.isfinite(out):
        raise InputError(path, f"{keyword} is not finite")
    return out


def to_hu(ds: Dataset, path: Path) -> np.ndarray:
    """Decode one slice and apply the modality LUT: HU = RescaleSlope * stored + RescaleIntercept."""
    if "PixelData" not in ds:
        raise InputError(path, "no pixel data")
    if int(ds.get("SamplesPerPixel", 1)) != 1 or str(ds.get("PhotometricInterpretation", "")) not in ("MONOCHROME2", "MONOCHROME1"):
        raise InputError(path, f"photometric interpretation {ds.get('PhotometricInterpretation')} is not greyscale")
    ts = str(getattr(ds.get("file_meta"), "TransferSyntaxUID", "") or "")
    missing = missing_decoder_reason(ts) if ts else None
    if missing:
        raise InputError(path, missing)
    try:
        stored = ds.pixel_array
    except Exception as exc:  # short or corrupt pixel data
        raise InputError(path, f"pixel data cannot be decoded ({type(exc).__name__}: {exc})") from None
    if stored.ndim != 2:
        raise InputError(path, f"expected one frame, got pixel array of shape {stored.shape}")
    slope = _float(ds, "RescaleSlope", 1.0, path)
    intercept = _float(ds, "RescaleIntercept", 0.0, path)
    if slope == 0:
        raise InputError(path, "RescaleSlope is 0")
    return (stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)


def _int(ds: Dataset, keyword: str) -> int:
    """An IS attribute as int for sorting; 0 when missing or malformed."""
    try:
        return int(ds.get(keyword, 0) or 0)
    except (TypeError, ValueError):
        return 0


def _spacing(ds: Dataset) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in (ds.get("PixelSpacing") or []))
    except (TypeError, ValueError):
        return ()


def load_series(ref: SeriesRef) -> Series:
    """Read and order a series by ImagePositionPatient projected on the slice normal.

    Falls back to InstanceNumber (with a warning) when position or orientation is missing. Of two
    slices at the same position the one with the higher AcquisitionNumber (then InstanceNumber) is
    kept, the other reported in ``warnings``.
    """
    loaded: list[tuple[Dataset, Path]] = []
    for fref in ref.files:
        loaded.append((read_dicom(fref.path, headers_only=False), fref.path))
    # the most common matrix and spacing define the series; a file that differs is named
    matrix = Counter((int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) for ds, _ in loaded).most_common(1)[0][0]
    spacing = Counter(_spacing(ds) for ds, _ in loaded).most_common(1)[0][0]
    rows, cols = matrix
    for ds, path in loaded:
        if (int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) != matrix:
            raise InputError(path, f"matrix {ds.get('Rows')}x{ds.get('Columns')} differs from {rows}x{cols} in the same series")
        if _spacing(ds) != spacing:
            raise InputError(path, f"PixelSpacing {list(_spacing(ds))} differs from {list(spacing)} in the same series")
    first, first_path = loaded[0]
    warnings: list[str] = []
    have_geometry = all("ImagePositionPatient" in ds and "ImageOrientationPatient" in ds for ds, _ in loaded)
    if have_geometry:
        try:
            normal = slice_normal(first.ImageOrientationPatient)
            keyed = []
            for ds, path in loaded:
                if not same_orientation(ds.ImageOrientationPatient, first.ImageOrientationPatient):
                    raise InputError(path, "ImageOrientationPatient differs within the series")
                keyed.append((round(position_along(normal, ds.ImagePositionPatient), 4), ds, path))
        except ValueError as exc:
            raise InputError(first_path, str(exc)) from None
    else:
        warnings.append("ImagePositionPatient/ImageOrientationPatient missing: ordered by InstanceNumber")
        keyed = [(float(_int(ds, "InstanceNumber")), ds, path) for ds, path in loaded]
    keyed.sort(key=lambda k: (k[0], _int(k[1], "AcquisitionNumber"), _int(k[1], "InstanceNumber")))
    kept: list[tuple[float, Dataset, Path]] = []
    for item in keyed:
        if kept and have_geometry and item[0] == kept[-1][0]:
            # sorted ascending, so ``item`` has the higher AcquisitionNumber/InstanceNumber: keep it
            warnings.append(f"duplicate position {item[0]} mm: kept {item[2].name}, dropped {kept[-1][2].name}")
            kept[-1] = item
        else:
            kept.append(item)
    for w in warnings:
        log.warning("series %s: %s", ref.series_uid, w)
    hu = np.empty((len(kept), rows, cols), dtype=np.float32)
    datasets, paths = [], []
    for i, (_, ds, path) in enumerate(kept):
        hu[i] = to_hu(ds, path)
        del ds.PixelData  # headers are kept for writing; the pixels live in ``hu``
        datasets.append(ds)
        paths.append(path)
    return Series(ref.study_uid, ref.series_uid, datasets, paths, hu, warnings)
