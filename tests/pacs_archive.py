"""Test studies for the PACS client tests: small CT (and MR) series in several transfer syntaxes,
with the stored values kept to compare against what comes back."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless, MRImageStorage, RLELossless

from tests.conftest import write_series

DATE_RANGE = "20260101-20260131"


@dataclass
class Series:
    """An uploaded series: its UIDs, transfer syntax, files and stored values by SOP Instance UID."""

    study_uid: str
    series_uid: str
    syntax: UID
    paths: list[Path]
    pixels: dict[str, np.ndarray] = field(default_factory=dict)


def make_series(folder: Path, study: str, series: str, seed: int, syntax: UID = ExplicitVRLittleEndian,
                modality: str = "CT", sop_class: UID | None = None, study_date: str | None = None,
                slices: int = 3) -> Series:
    """A ``slices``-slice 32x32 CT series written by ``write_series``, then recoded / relabelled as asked."""
    # 4x4 blocks of random values: runs for RLE (random noise would come out no smaller than it went in)
    volume = np.random.default_rng(seed).integers(900, 1200, (slices, 8, 8)).repeat(4, 1).repeat(4, 2)
    volume = volume.astype(np.uint16)
    paths = write_series(folder, volume, study=study, series=series)
    pixels = {}
    for p, img in zip(paths, volume):
        ds = pydicom.dcmread(p)
        ds.Modality = modality
        if sop_class:
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
        if study_date:
            ds.StudyDate = study_date
        if syntax != ExplicitVRLittleEndian:
            ds.compress(syntax, generate_instance_uid=False)
        ds.save_as(p, enforce_file_format=True)
        pixels[ds.SOPInstanceUID] = img
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    return Series(ds.StudyInstanceUID, ds.SeriesInstanceUID, syntax, paths, pixels)


def common_series(tmp: Path) -> dict[str, Series]:
    """Study A with an uncompressed, a JPEG 2000 lossless and an RLE CT series; study B with a CT and an MR
    series; study M with only an MR series; study O, CT but dated outside DATE_RANGE."""
    return {
        "plain": make_series(tmp / "plain", "A", "plain", 1),
        "j2k": make_series(tmp / "j2k", "A", "j2k", 2, JPEG2000Lossless),
        "rle": make_series(tmp / "rle", "A", "rle", 3, RLELossless),
        "b_ct": make_series(tmp / "b_ct", "B", "ct", 4),
        "b_mr": make_series(tmp / "b_mr", "B", "mr", 5, modality="MR", sop_class=MRImageStorage),
        "m_mr": make_series(tmp / "m_mr", "M", "mr", 6, modality="MR"),
        "old": make_series(tmp / "old", "O", "ct", 7, study_date="20251231"),
    }
