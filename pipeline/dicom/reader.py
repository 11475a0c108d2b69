"""Load a stack found by :mod:`pipeline.dicom.discovery` as ordered slices in HU.

Files are opened read-only and never modified. A stack that cannot be loaded raises
:class:`~pipeline.errors.InputError` naming the file and the reason.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from pipeline.dicom.codecs import missing_decoder_reason
from pipeline.dicom.discovery import SeriesRef, Skipped, finite_numbers, read_dicom
from pipeline.dicom.enhanced import frame_header, is_enhanced
from pipeline.dicom.geometry import position_along, same_orientation, slice_normal
from pipeline.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["Series", "SeriesPlan", "load_series", "plan_series", "to_hu"]


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
    frames: list[int | None] = field(default_factory=list)  # source frame (0-based) of enhanced images
    dropped: list[Skipped] = field(default_factory=list)  # duplicates left out, with the reason

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


def decode_stored(ds: Dataset, path: Path) -> np.ndarray:
    """Decode the stored values of every frame: (frames, rows, columns)."""
    if "PixelData" not in ds:
        raise InputError(path, "no pixel data")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or str(ds.get("PhotometricInterpretation", "")) not in ("MONOCHROME2", "MONOCHROME1"):
        raise InputError(path, f"photometric interpretation {ds.get('PhotometricInterpretation')} is not greyscale")
    ts = str(getattr(ds.get("file_meta"), "TransferSyntaxUID", "") or "")
    missing = missing_decoder_reason(ts) if ts else None
    if missing:
        raise InputError(path, missing)
    try:
        stored = ds.pixel_array
    except Exception as exc:  # short or corrupt pixel data, absurd sizes
        raise InputError(path, f"pixel data cannot be decoded ({type(exc).__name__}: {exc})") from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if stored.ndim == 2 and frames == 1:
        return stored[None]
    if stored.ndim == 3 and stored.shape[0] == frames:
        return stored
    raise InputError(path, f"pixel array of shape {stored.shape} does not match NumberOfFrames {frames}")


def stored_to_hu(stored: np.ndarray, header: Dataset, path: Path) -> np.ndarray:
    """Modality LUT: HU = RescaleSlope * stored + RescaleIntercept (float32)."""
    slope = _float(header, "RescaleSlope", 1.0, path)
    intercept = _float(header, "RescaleIntercept", 0.0, path)
    if slope == 0:
        raise InputError(path, "RescaleSlope is 0")
    return (stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)


def to_hu(ds: Dataset, path: Path | str) -> np.ndarray:
    """Decode one single-frame image and return (rows, columns) HU."""
    stored = decode_stored(ds, Path(path))
    if stored.shape[0] != 1:
        raise InputError(path, f"expected one frame, got {stored.shape[0]}")
    return stored_to_hu(stored[0], ds, Path(path))


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


@dataclass
class _Slice:
    header: Dataset  # classic CT header (per frame for enhanced sources), without pixel data
    path: Path
    frame: int | None  # 0-based frame of an enhanced source, None for single-frame images
    shape: tuple[int, int]
    position: float = 0.0


def _matrix(ds: Dataset, path: Path) -> tuple[int, int]:
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise InputError(path, "Rows/Columns missing or not numbers") from None
    if rows < 1 or cols < 1:
        raise InputError(path, f"matrix {rows}x{cols} is empty")
    return rows, cols


def _read_headers(path: Path) -> list[_Slice]:
    """The slices of one file, from its header alone (pixel data is decoded later, in chunks)."""
    ds = read_dicom(path, headers_only=True)
    try:
        for _ in ds.iterall():  # convert every element now, so a malformed one is blamed on this file
            pass
        shape = _matrix(ds, path)
        if is_enhanced(ds):
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            return [_Slice(frame_header(ds, k, path), path, k, shape) for k in range(frames)]
        return [_Slice(ds, path, None, shape)]
    except InputError:
        raise
    except Exception as exc:  # a malformed element met while reading values
        raise InputError(path, f"malformed DICOM ({type(exc).__name__}: {exc})") from None


def _decode_file(path: Path) -> np.ndarray:
    """Stored values of every frame of ``path``: (frames, rows, columns)."""
    ds = read_dicom(path, headers_only=False)
    try:
        return decode_stored(ds, path)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(path, f"malformed DICOM ({type(exc).__name__}: {exc})") from None


def _order(slices: list[_Slice], warnings: list[str], dropped: list[_Slice]) -> list[_Slice]:
    have = [("ImagePositionPatient" in s.header and "ImageOrientationPatient" in s.header) for s in slices]
    if not any(have):
        warnings.append("ImagePositionPatient/ImageOrientationPatient missing: ordered by InstanceNumber")
        return sorted(slices, key=lambda s: (_int(s.header, "InstanceNumber"), str(s.path)))
    if not all(have):
        bad = slices[have.index(False)]
        raise InputError(bad.path, "ImagePositionPatient or ImageOrientationPatient missing while the rest of the series has them")
    orientations = Counter(tuple(round(v, 3) for v in iop)
                           for s in slices if (iop := finite_numbers(s.header.ImageOrientationPatient, 6)))
    if not orientations:
        raise InputError(slices[0].path, "ImageOrientationPatient is not 6 finite numbers")
    main = orientations.most_common(1)[0][0]
    normal = slice_normal(main)
    for s in slices:
        try:
            if not same_orientation(s.header.ImageOrientationPatient, main, tol=1e-3):
                raise InputError(s.path, f"ImageOrientationPatient {list(s.header.ImageOrientationPatient)} differs from the series' {list(main)}")
            s.position = round(position_along(normal, s.header.ImagePositionPatient), 4)
        except (ValueError, TypeError) as exc:
            raise InputError(s.path, str(exc)) from None
    slices.sort(key=lambda s: (s.position, _int(s.header, "AcquisitionNumber"), _int(s.header, "InstanceNumber")))
    kept: list[_Slice] = []
    for s in slices:
        if kept and s.position == kept[-1].position:
            # sorted ascending, so ``s`` has the higher AcquisitionNumber/InstanceNumber: keep it
            warnings.append(f"duplicate position {s.position} mm: kept {_name(s)}, dropped {_name(kept[-1])}")
            dropped.append(kept[-1])
            kept[-1] = s
        else:
            kept.append(s)
    steps = np.diff([s.position for s in kept])
    if len(steps) >= 2:
        typical = float(np.median(steps))
        for s, step in zip(kept[1:], steps):
            if step > 1.5 * typical:
                warnings.append(f"gap of {step:g} mm before {_name(s)} (typical {typical:g} mm): a slice may be missing")
    return kept


def _name(s: _Slice) -> str:
    return s.path.name if s.frame is None else f"{s.path.name} frame {s.frame + 1}"


@dataclass
class SeriesPlan:
    """An ordered stack whose headers are read and checked but whose pixels are not decoded yet:
    :meth:`read` decodes any run of slices, so a long series streams through in chunks."""

    study_uid: str
    series_uid: str
    datasets: list[Dataset]
    paths: list[Path]
    frames: list[int | None]
    shape: tuple[int, int]
    warnings: list[str] = field(default_factory=list)
    dropped: list[Skipped] = field(default_factory=list)
    positions_mm: list[float] | None = None  # along the slice normal, stack order; None: ordered by InstanceNumber

    def __len__(self) -> int:
        return len(self.datasets)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Slices ``start:stop`` in HU, (n, rows, columns) float32. A multi-frame file is decoded
        once for consecutive frames of it."""
        return self.read_at(range(start, stop))

    def read_at(self, positions: Sequence[int]) -> np.ndarray:
        """The slices at ``positions`` (stack order) in HU, (n, rows, columns) float32; a file is
        decoded once for consecutive positions in it (the frames of a multi-frame image)."""
        out = np.empty((len(positions), *self.shape), np.float32)
        decoded_path, decoded = None, np.empty((0, 0, 0))
        for j, i in enumerate(positions):
            path, k = self.paths[i], self.frames[i] or 0
            if path != decoded_path:
                decoded_path, decoded = path, _decode_file(path)
            if k >= decoded.shape[0]:
                raise InputError(path, f"frame {k + 1} missing from the pixel data")
            stored = decoded[k]
            if stored.shape != self.shape:
                raise InputError(path, f"pixel data of {stored.shape[0]}x{stored.shape[1]} does not match the "
                                       f"series' {self.shape[0]}x{self.shape[1]}")
            out[j] = stored_to_hu(stored, self.datasets[i], path)
        return out


def plan_series(ref: SeriesRef) -> SeriesPlan:
    """Read the headers of a stack and order it by ImagePositionPatient projected on the slice normal.

    Enhanced CT files contribute one slice per frame, with each frame's own geometry and rescale.
    Falls back to InstanceNumber (with a warning) when no slice has position and orientation; a
    slice without them in a series that has them is an error naming its file. Of two slices at the
    same position the one with the higher AcquisitionNumber (then InstanceNumber) is kept, the other
    reported in ``warnings``.
    """
    if ref.error:
        raise InputError(ref.error.path, ref.error.reason)
    slices = [s for f in ref.files for s in _read_headers(f.path)]
    # the most common matrix and spacing define the series; a file that differs is named
    matrix = Counter(s.shape for s in slices).most_common(1)[0][0]
    spacing = Counter(_spacing(s.header) for s in slices).most_common(1)[0][0]
    for s in slices:
        if s.shape != matrix:
            raise InputError(s.path, f"matrix {s.shape[0]}x{s.shape[1]} differs from {matrix[0]}x{matrix[1]} in the same series")
        if _spacing(s.header) != spacing:
            raise InputError(s.path, f"PixelSpacing {list(_spacing(s.header))} differs from {list(spacing)} in the same series")
    warnings: list[str] = []
    dropped: list[_Slice] = []
    kept = _order(slices, warnings, dropped)
    for w in warnings:
        log.warning("series %s: %s", ref.series_uid, w)
    left_out = [Skipped(str(d.path), f"duplicate position {d.position} mm: an instance with a higher "
                        "AcquisitionNumber/InstanceNumber was kept", ref.series_uid, ref.study_uid, "dropped")
                for d in dropped]
    by_geometry = all("ImagePositionPatient" in s.header for s in kept)
    return SeriesPlan(ref.study_uid, ref.series_uid, [s.header for s in kept], [s.path for s in kept],
                      [s.frame for s in kept], matrix, warnings, left_out,
                      [s.position for s in kept] if by_geometry else None)


def load_series(ref: SeriesRef) -> Series:
    """:func:`plan_series` and every slice decoded: the whole stack in memory (short series, tests,
    training; the pipeline streams with :meth:`SeriesPlan.read`)."""
    plan = plan_series(ref)
    return Series(plan.study_uid, plan.series_uid, plan.datasets, plan.paths, plan.read(0, len(plan)),
                  plan.warnings, plan.frames, plan.dropped)
