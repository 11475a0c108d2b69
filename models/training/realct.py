"""The real CT set: single slices from public sources (``manifest.csv`` names each file's group,
source, terms and scanner), split by SOURCE, never by slice, so no scanner or patient of the
validation or test part is ever trained on.

* ``train``: LIDC-IDRI (GE LightSpeed Plus / LightSpeed16), COVID-19-NY-SBU (GE LightSpeed VCT,
  Toshiba Aquilion ONE), TotalSegmentator's example (Siemens Biograph40 mCT), rt-utils' phantom
  (GE Discovery MI);
* ``validation`` (every model choice is made here): fo-dicom's, imageio's and dcmqi's CT test
  files (GE Genesis, HiSpeed CT/i, Optima CT520, LightSpeed Ultra, Philips Ingenuity, Brilliance 64);
* ``test`` (reported once, for the shipped model): Orthanc's user-contributed test files (GE
  BrightSpeed, Philips iCT 256, Siemens Emotion Duo, SOMATOM Definition AS+, Sensation 64, Toshiba
  Xpress/GX, XEOS AURA PET/CT).

The set is read where it lies (``realct_dir``); it is never copied into this repository.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from pipeline.dicom.reader import to_hu

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DIR = "../shared/data/realct"
SPLIT = {
    "train": ("lidc_concept_to_clinic", "covid19_ny_sbu_image_registration", "totalsegmentator_example",
              "rt_utils_phantom"),
    "validation": ("fo_dicom", "imageio_binaries", "dcmqi"),
    "test": ("orthanc_tests",),
}


@dataclass(frozen=True)
class RealSlice:
    file: str  # path relative to the set's folder
    group: str
    source: str
    terms: str
    scanner: str
    hu: np.ndarray  # (H, W) float32, as stored (padding and air below the window included)
    pixel_mm: float
    kernel: str = ""  # the reconstruction kernel the manifest names ("" when the file names none)


def resolve(folder: str | Path = DEFAULT_DIR) -> Path:
    path = Path(folder)
    return path if path.is_absolute() else (REPO / path).resolve()


def available(folder: str | Path = DEFAULT_DIR) -> bool:
    return (resolve(folder) / "manifest.csv").is_file()


def read_manifest(folder: str | Path, missing: str) -> list[dict[str, str]]:
    """The rows of ``folder``'s ``manifest.csv``; ``missing`` says what is not there if it is not."""
    path = resolve(folder) / "manifest.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {missing}")
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def manifest(folder: str | Path = DEFAULT_DIR) -> list[dict[str, str]]:
    return read_manifest(folder, "the real CT set is not there (set realct_dir)")


def load_part(part: str, folder: str | Path = DEFAULT_DIR, min_side: int = 0) -> list[RealSlice]:
    """The slices of one part of the split (``train``, ``validation``, ``test``), in manifest order,
    at least ``min_side`` pixels on each side."""
    if part not in SPLIT:
        raise ValueError(f"part must be one of {sorted(SPLIT)}, got {part!r}")
    root = resolve(folder)
    out = []
    for row in manifest(folder):
        if row["group"] not in SPLIT[part] or min(int(row["rows"]), int(row["cols"])) < min_side:
            continue
        path = root / row["file"]
        ds = pydicom.dcmread(path)
        scanner = " ".join(v for v in (row["manufacturer"], row["model"]) if v) or "unknown scanner"
        out.append(RealSlice(row["file"], row["group"], row["source"], row["terms"], scanner, to_hu(ds, path),
                             float(row["pixel_mm"] or 0.75), kernel_name(row["kernel"])))
    return out


def kernel_name(value: str) -> str:
    """The kernel as the manifest writes ConvolutionKernel: a name, or a multi-valued one as a Python
    list (Siemens' ``['I70f', '3']``: the kernel and its strength), of which the first value names it."""
    value = value.strip()
    if value.startswith("["):
        value = value.strip("[]").split(",")[0].strip().strip("'\"")
    return value


def attribution(part: str, folder: str | Path = DEFAULT_DIR) -> list[dict[str, str | int]]:
    """Per group of ``part``: its source, terms, scanners and slice count (for the model card)."""
    groups: dict[str, dict] = {}
    for row in manifest(folder):
        if row["group"] in SPLIT[part]:
            g = groups.setdefault(row["group"], {"group": row["group"], "source": row["source"],
                                                 "terms": row["terms"], "scanners": set(), "slices": 0})
            g["scanners"].add(" ".join(v for v in (row["manufacturer"], row["model"]) if v) or "unknown")
            g["slices"] += 1
    return [dict(g, scanners=sorted(g["scanners"])) for g in groups.values()]
