"""What the nightly run asks of a PACS, whatever the protocol.

Both implementations (:mod:`.dicomweb`, :mod:`.dimse`) turn every fault into a one-line
:class:`~.errors.PacsError` (``transient`` where a retry may help) or :class:`~.errors.PacsAuthError`.
"""
from __future__ import annotations

import abc
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from pipeline.dicom.uids import is_valid_uid
from pipeline.pacs.config import PacsConfig


@dataclass(frozen=True)
class StudyInfo:
    study_uid: str
    study_date: str = ""
    study_time: str = ""
    modalities: tuple[str, ...] = ()
    instances: int | None = None


@dataclass(frozen=True)
class SeriesInfo:
    series_uid: str
    modality: str = ""
    number: str = ""
    instances: int | None = None


@dataclass(frozen=True)
class InstanceInfo:
    sop_uid: str
    sop_class_uid: str = ""      # empty: the PACS did not say
    image_type: tuple[str, ...] = ()
    derivation: str = ""         # DerivationDescription, where the PACS gives it


def text(ds: Dataset, keyword: str) -> str:
    """A query response's attribute as one string ('' when absent or empty)."""
    value = ds.get(keyword, None)
    if value is None or value == "":
        return ""
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def count(ds: Dataset, keyword: str) -> int | None:
    try:
        return int(text(ds, keyword))
    except ValueError:
        return None


def study_info(ds: Dataset) -> StudyInfo:
    mods = tuple(m for m in text(ds, "ModalitiesInStudy").split("\\") if m)
    return StudyInfo(text(ds, "StudyInstanceUID"), text(ds, "StudyDate"), text(ds, "StudyTime"), mods,
                     count(ds, "NumberOfStudyRelatedInstances"))


def series_info(ds: Dataset) -> SeriesInfo:
    return SeriesInfo(text(ds, "SeriesInstanceUID"), text(ds, "Modality"), text(ds, "SeriesNumber"),
                      count(ds, "NumberOfSeriesRelatedInstances"))


def instance_info(ds: Dataset) -> InstanceInfo:
    types = tuple(t.strip().upper() for t in text(ds, "ImageType").split("\\") if t.strip())
    return InstanceInfo(text(ds, "SOPInstanceUID"), text(ds, "SOPClassUID"), types, text(ds, "DerivationDescription"))


def instance_file_name(sop_uid: str) -> str:
    """A retrieved instance's file name: its SOP Instance UID where that is a UID, else a hash of it."""
    return f"{sop_uid}.dcm" if is_valid_uid(sop_uid) else f"x{hashlib.sha1(sop_uid.encode()).hexdigest()}.dcm"


class PacsClient(abc.ABC):
    """One PACS. Use as a context manager; every method may raise :class:`~.errors.PacsError`."""

    def __init__(self, config: PacsConfig) -> None:
        self.config = config

    def __enter__(self) -> PacsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release connections (nothing by default)."""

    @abc.abstractmethod
    def find_studies(self, date_range: str = "", *, study_uid: str = "", accession_number: str = "") -> list[StudyInfo]:
        """Studies with CT in ModalitiesInStudy whose StudyDate is in ``date_range`` (``YYYYMMDD-YYYYMMDD``),
        or whose StudyInstanceUID or AccessionNumber is the one given (exact match)."""

    @abc.abstractmethod
    def find_series(self, study_uid: str) -> list[SeriesInfo]:
        """The series of a study, with their modality and instance counts where the PACS gives them."""

    @abc.abstractmethod
    def find_instances(self, study_uid: str, series_uid: str) -> list[InstanceInfo]:
        """The instances of a series (SOP Instance UID; SOP class and image type where the PACS gives them)."""

    @abc.abstractmethod
    def retrieve_series(self, study_uid: str, series_uid: str, folder: Path) -> int:
        """Write every instance of the series into ``folder`` (which exists) as DICOM Part-10 files in
        the transfer syntax the PACS stored them in; returns the number of files written."""

    @abc.abstractmethod
    def store(self, paths: Sequence[Path]) -> None:
        """Store DICOM files; raise :class:`~.errors.PacsError` unless the PACS accepted every one."""
