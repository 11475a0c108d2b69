"""Real contiguous CT volumes for slice context (``../shared/data/realct_volumes``): 51 series of 24
contiguous axial slices (IBSI validation set from TCIA Soft-tissue-Sarcoma: extremity CT of PET/CT
studies, GE Discovery ST, 3.27 mm slices at 3.27 mm, CC BY 3.0; ``manifest.csv`` names each file's
series, source, terms and position).

Split by SERIES (one series per patient), never by slice, in the order of the series names:
:data:`SPLIT_SIZES` series for training, then validation, then test. One scanner and one anatomy:
a score on these is not a score on chest or abdomen CT. Read where they lie, never copied here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from pipeline.dicom.reader import to_hu

from .realct import read_manifest, resolve

DEFAULT_DIR = "../shared/data/realct_volumes"
SPLIT_SIZES = {"train": 35, "validation": 8, "test": 8}  # series, in name order


@dataclass(frozen=True)
class Volume:
    series: str
    hu: np.ndarray  # (slices, H, W) float32 in stack order (increasing z)
    z_mm: np.ndarray  # (slices,) positions along the stack
    pixel_mm: float
    terms: str


def series_names(folder: str | Path = DEFAULT_DIR) -> list[str]:
    return sorted({row["series"] for row in manifest(folder)})


def split(folder: str | Path = DEFAULT_DIR) -> dict[str, list[str]]:
    """Part -> series names: the first :data:`SPLIT_SIZES` ``train`` series, then ``validation``,
    then ``test`` (the rest, if the set grows, goes to ``train``)."""
    names = series_names(folder)
    out, start = {}, 0
    for part, size in SPLIT_SIZES.items():
        out[part] = names[start:start + size]
        start += size
    out["train"] = out["train"] + names[start:]
    return out


def load_part(part: str, folder: str | Path = DEFAULT_DIR) -> list[Volume]:
    """The volumes of one part, each slice decoded once."""
    parts = split(folder)
    if part not in parts:
        raise ValueError(f"part must be one of {sorted(parts)}, got {part!r}")
    rows: dict[str, list[dict[str, str]]] = {}
    for row in manifest(folder):
        if row["series"] in parts[part]:
            rows.setdefault(row["series"], []).append(row)
    root = resolve(folder)
    out = []
    for series in parts[part]:
        files = sorted(rows[series], key=lambda r: float(r["z_mm"]))
        hu = np.stack([to_hu(pydicom.dcmread(root / r["file"]), root / r["file"]) for r in files]).astype(np.float32)
        out.append(Volume(series, hu, np.array([float(r["z_mm"]) for r in files]), float(files[0]["pixel_mm"]),
                          files[0]["terms"]))
    return out


def manifest(folder: str | Path = DEFAULT_DIR) -> list[dict[str, str]]:
    return read_manifest(folder, "the real CT volumes are not there (set volumes_dir)")
