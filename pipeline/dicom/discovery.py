"""Find the CT image stacks in a folder tree (headers only; pixels are decoded later).

Walks any depth, any file names. Each file is either kept (grouped by StudyInstanceUID, then
SeriesInstanceUID, then stack) or skipped with a one-line reason. A series that mixes stacks
(another orientation, matrix or pixel spacing) is split into stacks, each denoised as its own
derived series; then the stack rules of :class:`~pipeline.dicom.selection.SelectionRules` drop lone
localizers and screenshots.
"""
from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from pipeline.dicom.selection import ENHANCED_CT_IMAGE_STORAGE, SelectionRules
from pipeline.dicom.uids import path_safe_uid, uuid_uid
from pipeline.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileRef:
    """Header facts of one candidate image file."""

    path: Path
    sop_uid: str
    rows: int = 0
    cols: int = 0
    spacing: tuple[float, ...] = ()
    orientation: tuple[float, ...] = ()  # () when missing
    frames: int = 1


@dataclass
class Skipped:
    """A file left out, and why. ``status``: ``skipped`` (not selected: not DICOM, localizer, ...),
    ``failed`` (broken input: its series could not be denoised) or ``dropped`` (a duplicate)."""

    path: str
    reason: str
    series_uid: str = ""
    study_uid: str = ""  # empty when the file has none (not DICOM, unreadable)
    status: str = "skipped"


def skipped_summary(skipped: Sequence[Skipped], limit: int = 10) -> str:
    """``"N files skipped: <file>: <reason>; ..."``, the first ``limit`` of them and a count of the
    rest, on one line (why a folder gave nothing to denoise)."""
    if not skipped:
        return "no files found"
    shown = "; ".join(f"{Path(f.path).name}: {f.reason}" for f in skipped[:limit])
    more = f"; and {len(skipped) - limit} more (see the log)" if len(skipped) > limit else ""
    return f"{len(skipped)} file{'s' if len(skipped) != 1 else ''} skipped: {shown}{more}"


@dataclass
class SeriesRef:
    """One stack of one series: images of the same orientation, matrix and pixel spacing."""

    study_uid: str
    series_uid: str
    files: list[FileRef] = field(default_factory=list)
    stack: int = 0  # 0 = the largest stack of the series
    stacks: int = 1
    # set when a file of the series is broken: the series must fail as a whole (a derived series
    # with a slice missing would be a wrong series)
    error: Skipped | None = None

    @property
    def key(self) -> str:
        """Unique within the study: the series UID, plus ``#n`` when the series was split."""
        return self.series_uid if self.stacks == 1 else f"{self.series_uid}#{self.stack + 1}"

    @property
    def images(self) -> int:
        return sum(f.frames for f in self.files)


@dataclass
class StudyScan:
    study_uid: str
    series: dict[str, SeriesRef] = field(default_factory=dict)  # by SeriesRef.key
    # the files' own StudyInstanceUID where it is not a DICOM UID and study_uid stands in for it
    source_study_uid: str = ""


@dataclass
class ScanResult:
    studies: dict[str, StudyScan] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)


def read_dicom(path: Path, headers_only: bool = True) -> Dataset:
    """Read a file read-only (header only by default). Files without the 128-byte preamble and
    'DICM' (older exports) are accepted when they parse as a dataset with SOP Class and Instance UIDs."""
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    try:
        with open(path, "rb") as fh:
            return pydicom.dcmread(fh, stop_before_pixels=headers_only)
    except InvalidDicomError:
        pass
    except Exception as exc:  # truncated or corrupt header
        raise InputError(path, f"unreadable DICOM header ({type(exc).__name__}: {exc})") from None
    try:
        with open(path, "rb") as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=headers_only, force=True)
        if ds.get("SOPClassUID") and ds.get("SOPInstanceUID"):
            if "TransferSyntaxUID" not in ds.file_meta:  # no file meta: say how it was parsed
                implicit, little = ds.original_encoding
                ds.file_meta.TransferSyntaxUID = (uid.ImplicitVRLittleEndian if implicit else
                                                  uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian)
            return ds
    except Exception:
        pass
    raise InputError(path, "not a DICOM file (no DICM preamble and no parsable dataset)")


def functional_group(ds: Dataset, sequence: str, frame: int | None = None) -> Dataset | None:
    """Item of functional-group macro ``sequence`` (e.g. "PlanePositionSequence") of an enhanced
    image: per-frame item when present, else the shared one (PS3.3 C.7.6.16)."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        if index is None or groups not in ds or len(ds[groups].value) <= index:
            continue
        item = ds[groups].value[index]
        if sequence in item and len(item[sequence].value):
            return item[sequence].value[0]
    return None


def finite_numbers(value: object, n: int) -> tuple[float, ...]:
    """``value`` as ``n`` finite floats, or () when it is missing, malformed or of another length."""
    try:
        out = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return ()
    return out if len(out) == n and all(math.isfinite(v) for v in out) else ()


def file_ref(path: Path, ds: Dataset) -> FileRef:
    enhanced = str(ds.get("SOPClassUID", "")) == ENHANCED_CT_IMAGE_STORAGE
    iop, spacing = ds.get("ImageOrientationPatient"), ds.get("PixelSpacing")
    if enhanced:
        orient = functional_group(ds, "PlaneOrientationSequence", 0)
        measures = functional_group(ds, "PixelMeasuresSequence", 0)
        iop = orient.get("ImageOrientationPatient") if orient is not None else None
        spacing = measures.get("PixelSpacing") if measures is not None else None
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    return FileRef(path, str(ds.SOPInstanceUID), int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0),
                   tuple(round(v, 4) for v in finite_numbers(spacing, 2)), tuple(round(v, 3) for v in finite_numbers(iop, 6)),
                   frames)


def file_error(path: Path, ds: Dataset) -> str | None:
    """Why a selected file is broken (its series cannot be denoised), or None. Headers only."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    ts = getattr(ds.get("file_meta"), "TransferSyntaxUID", None)
    if ts is not None and ts.is_transfer_syntax and not ts.is_compressed and not ts.is_deflated:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        need = rows * cols * frames * ((int(ds.get("BitsAllocated", 16) or 16) + 7) // 8)
        have = path.stat().st_size
        if need > have:
            return f"Rows x Columns {rows}x{cols} x {frames} frame(s) need {need} bytes of pixel data, the file has {have}"
    return None


def _is_axial(orientation: tuple[float, ...]) -> bool:
    if not orientation:
        return True  # unknown: give it the benefit of the doubt
    normal = np.cross(orientation[:3], orientation[3:])
    return bool(abs(normal[2]) > 0.8 * max(float(np.linalg.norm(normal)), 1e-9))


def split_stacks(study_uid: str, series_uid: str, files: list[FileRef], rules: SelectionRules,
                 skipped: list[Skipped]) -> list[SeriesRef]:
    """Group a series' files by (orientation, matrix, spacing); apply the lone-image rules."""
    groups: dict[tuple, list[FileRef]] = defaultdict(list)
    for f in files:
        groups[(f.orientation, f.rows, f.cols, f.spacing)].append(f)
    ordered = sorted(groups.values(), key=lambda g: (-sum(f.frames for f in g), str(g[0].path)))
    main = ordered[0]
    for group in ordered[1:]:
        f = group[0]
        broken = ("ImageOrientationPatient missing or not 6 finite numbers" if main[0].orientation and not f.orientation
                  else "PixelSpacing missing or not 2 finite numbers" if main[0].spacing and not f.spacing else None)
        if broken:
            error = Skipped(str(f.path), f"{broken} while the rest of the series has it", series_uid, study_uid,
                            "failed")
            return [SeriesRef(study_uid, series_uid, files, error=error)]
    kept: list[list[FileRef]] = []
    for group in ordered:
        lone = len(group) == 1 and group[0].frames == 1
        f = group[0]
        reason = None
        if lone and group is not main and rules.skip_lone_images_unlike_main_stack and len(main) > 1:
            what = "orientation" if f.orientation != main[0].orientation else "matrix or pixel spacing"
            reason = f"lone image whose {what} differs from the series' main stack (localizer or screenshot)"
        elif lone and len(ordered) == 1 and rules.skip_lone_non_axial and not _is_axial(f.orientation):
            reason = "lone non-axial image (localizer/scout)"
        elif lone and len(ordered) == 1 and rules.skip_lone_non_square and f.rows != f.cols:
            reason = f"lone non-square {f.rows}x{f.cols} image (screenshot or report)"
        if reason:
            skipped.extend(Skipped(str(g.path), reason, series_uid, study_uid) for g in group)
        else:
            kept.append(group)
    return [SeriesRef(study_uid, series_uid, group, k, len(kept)) for k, group in enumerate(kept)]


def _walk(root: Path) -> Iterator[Path]:
    """Files under ``root`` in a stable order; hidden files and folders (temporaries) are left out."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield from (Path(folder) / f for f in sorted(files) if not f.startswith("."))


def usable_uid(uid: str, what: str, path: Path, warned: set[tuple[str, str]], anchor: str = "") -> str:
    """``uid`` where it can name a folder (digits and dots, at most 64 characters); for any other
    value a valid UID derived from it, the same on every run, with a warning once per value
    (``warned`` holds those already warned of). A value that is not a UID (hex hashes written by some
    anonymisers) is kept in the files: a derived series is written with its source's
    StudyInstanceUID, so it stays in the same study. A missing one (some converters write none) is
    derived from ``anchor`` (what the files of one study or series share) and written into the
    derived series, which must have one."""
    try:
        return path_safe_uid(uid, what)
    except ValueError:
        pass
    missing = not uid.strip()
    stand_in = uuid_uid("ct-denoise stand-in", what, f"missing|{anchor}" if missing else uid)
    if (what, stand_in) not in warned:
        warned.add((what, stand_in))
        told = f"{what} missing" if missing else f"{what} {uid[:80]!r} is not a DICOM UID"
        log.warning("%s: %s; %s stands in for it in folder names and reports%s", path, told, stand_in,
                    " and in the derived series" if missing else " (the derived series keep the source's own)")
    return stand_in


def scan(root: Path | str, rules: SelectionRules | None = None) -> ScanResult:
    """Walk ``root`` (a folder of any depth, or a single file) and group CT stacks by study and series."""
    rules = rules or SelectionRules()
    root = Path(root)
    if not root.exists():
        raise InputError(root, "no such file or folder")
    paths = [root] if root.is_file() else list(_walk(root))
    result = ScanResult()
    series_files: dict[tuple[str, str], list[FileRef]] = defaultdict(list)
    series_errors: dict[tuple[str, str], Skipped] = {}
    substituted: dict[str, str] = {}  # stand-in StudyInstanceUID -> the files' own
    warned: set[tuple[str, str]] = set()
    for path in paths:
        try:
            ds = read_dicom(path)
        except InputError as exc:
            not_dicom = exc.reason.startswith("not a DICOM file")
            result.skipped.append(Skipped(str(path), exc.reason, status="skipped" if not_dicom else "failed"))
            continue
        try:  # pydicom converts values lazily: a malformed element surfaces here
            study_uid, series_uid = str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", ""))
            reason = rules.file_skip_reason(ds)
            if not reason:
                try:
                    own_study = study_uid
                    # files without UIDs belong together when they share a frame of reference (else a folder)
                    anchor = str(ds.get("FrameOfReferenceUID", "") or path.parent)
                    study_uid = usable_uid(study_uid, "StudyInstanceUID", path, warned, anchor)
                    series_uid = usable_uid(series_uid, "SeriesInstanceUID", path, warned,
                                            f"{anchor}|{ds.get('SeriesNumber', '')}")
                    if study_uid != own_study:
                        substituted[study_uid] = own_study
                except ValueError as exc:
                    reason, study_uid, series_uid = str(exc), "", ""
            if reason:
                result.skipped.append(Skipped(str(path), reason, series_uid, study_uid))
                continue
            ref, error = file_ref(path, ds), file_error(path, ds)
        except Exception as exc:
            result.skipped.append(Skipped(str(path), f"malformed DICOM header ({type(exc).__name__}: {exc})",
                                          status="failed"))
            continue
        series_files[(study_uid, series_uid)].append(ref)
        if error and (study_uid, series_uid) not in series_errors:
            series_errors[(study_uid, series_uid)] = Skipped(str(path), error, series_uid, study_uid, "failed")
    for (study_uid, series_uid), files in series_files.items():
        error = series_errors.get((study_uid, series_uid))
        refs = ([SeriesRef(study_uid, series_uid, files, error=error)] if error
                else split_stacks(study_uid, series_uid, files, rules, result.skipped))
        for ref in refs:
            study = result.studies.setdefault(study_uid, StudyScan(study_uid,
                                                                    source_study_uid=substituted.get(study_uid, "")))
            study.series[ref.key] = ref
    for s in result.skipped:
        log.info("skipped %s: %s", s.path, s.reason)
    return result
