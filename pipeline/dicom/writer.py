"""Write a denoised stack as a NEW derived CT series (PS3.3 C.7.6.1.1.2, C.8.2.1).

Kept from each source image: Patient, Study, Frame of Reference, equipment and every geometry tag
(ImagePositionPatient, ImageOrientationPatient, PixelSpacing, SliceThickness, ...), rescale and
window tags, InstanceNumber. New: SeriesInstanceUID, SOPInstanceUIDs, SeriesNumber,
SeriesDescription, dates/times, ImageType DERIVED\\SECONDARY\\..., DerivationDescription and
DerivationCodeSequence, SourceImageSequence. Private tags are removed (their meaning may depend on
the original pixels). Pixel data are written uncompressed, Explicit VR Little Endian.
"""
from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from pipeline.dicom.codecs import LOSSY_METHODS
from pipeline.dicom.enhanced import classic_sop_class
from pipeline.dicom.selection import DERIVED_MARKER
from pipeline.dicom.uids import derived_uid

SMOOTHING_CODE = ("113087", "DCM", "Smoothing")  # CID 7203; DICOM has no "denoising" code
SOURCE_PURPOSE_CODE = ("121322", "DCM", "Source image for image processing operation")


@dataclass(frozen=True)
class DerivedSeriesInfo:
    """What makes a derived series: its provenance strings and UID inputs."""

    description: str  # DerivationDescription, starts with DERIVED_MARKER
    fingerprint: str  # model hash + settings; enters every new UID
    description_suffix: str = " DENOISED"
    series_number_offset: int = 1000
    transfer_syntax: str = ExplicitVRLittleEndian  # or a lossless one (pipeline.dicom.codecs.OUTPUT_SYNTAXES)


def _code_item(code: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def stored_range(ds: Dataset) -> tuple[int, int]:
    """Smallest and largest stored value allowed by BitsStored and PixelRepresentation."""
    bits = int(ds.get("BitsStored", 16))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def padding_value(ds: Dataset) -> int | None:
    """PixelPaddingValue as a stored value of the image's pixel representation. Its VR is US or SS
    (PS3.3 C.7.5.1.1.2); GE writes US 63536 on signed pixel data, which means -2000 there."""
    pad = ds.get("PixelPaddingValue")
    if pad is None or pad == "":
        return None
    value = int(pad)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    if int(ds.get("PixelRepresentation", 0)) == 1 and value >= 1 << (bits - 1):
        value -= 1 << bits  # the same bits read as two's complement
    return value


def hu_to_stored(hu: np.ndarray, ds: Dataset, source_stored: np.ndarray | None = None) -> np.ndarray:
    """HU -> stored values through the source's RescaleSlope/Intercept, rounded and clipped to the
    source's BitsStored and PixelRepresentation. Pixels that held PixelPaddingValue in the source
    keep it."""
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    lo, hi = stored_range(ds)
    stored = np.clip(np.rint((hu.astype(np.float64) - intercept) / slope), lo, hi)
    dtype = np.int16 if int(ds.get("PixelRepresentation", 0)) == 1 else np.uint16
    out = stored.astype(dtype)
    pad = padding_value(ds)
    if pad is not None and source_stored is not None and lo <= pad <= hi:
        out[source_stored == pad] = pad
    return out


def stack_to_stored(out_hu: np.ndarray, source_hu: np.ndarray, datasets: Sequence[Dataset]) -> list[np.ndarray]:
    """Stored values of each denoised slice through its source's rescale tags; pixels that held
    the source's PixelPaddingValue keep it (the source's stored values are recovered from its HU)."""
    return [hu_to_stored(out, ds, source_stored=hu_to_stored(src, ds))
            for out, src, ds in zip(out_hu, source_hu, datasets, strict=True)]


def derived_series_uid(source_series_uid: str, info: DerivedSeriesInfo) -> str:
    return derived_uid(source_series_uid, info.fingerprint, "series")


def derived_sop_uid(source_sop_uid: str, info: DerivedSeriesInfo) -> str:
    return derived_uid(source_sop_uid, info.fingerprint, "image")


def source_key(src: Dataset, frame: int | None) -> str:
    """The source image an output image derives from: SOPInstanceUID, plus ``/n`` for frame n
    (1-based) of a multi-frame source."""
    return str(src.SOPInstanceUID) if frame is None else f"{src.SOPInstanceUID}/{frame + 1}"


def derive_dataset(src: Dataset, pixels: np.ndarray, series_uid: str, info: DerivedSeriesInfo,
                   now: dt.datetime, frame: int | None = None) -> Dataset:
    """A new derived image from source header ``src`` and stored ``pixels`` (rows, cols) int16/uint16.

    ``frame`` (0-based) marks ``src`` as the per-frame header of an enhanced multi-frame image: the
    output is then a classic CT image referencing that frame."""
    ds = copy.deepcopy(src)
    ds.remove_private_tags()
    for kw in ("PixelData", "SmallestImagePixelValue", "LargestImagePixelValue",
               "SmallestPixelValueInSeries", "LargestPixelValueInSeries"):
        if kw in ds:
            delattr(ds, kw)
    src_sop_uid = str(src.SOPInstanceUID)
    sop_uid = derived_sop_uid(source_key(src, frame), info)
    sop_class = classic_sop_class(src)
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")

    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.SeriesInstanceUID = series_uid
    src_type = [str(v) for v in (src.get("ImageType") or [])]
    ds.ImageType = ["DERIVED", "SECONDARY"] + (src_type[2:] if len(src_type) > 2 else ["AXIAL"])
    ds.DerivationDescription = info.description[:1024]
    ds.DerivationCodeSequence = [_code_item(SMOOTHING_CODE)]
    ref = Dataset()
    ref.ReferencedSOPClassUID = src.SOPClassUID
    ref.ReferencedSOPInstanceUID = src_sop_uid
    if frame is not None:
        ref.ReferencedFrameNumber = frame + 1
    ref.PurposeOfReferenceCodeSequence = [_code_item(SOURCE_PURPOSE_CODE)]
    ds.SourceImageSequence = [ref]
    desc = str(src.get("SeriesDescription", "") or "")
    ds.SeriesDescription = desc[: 64 - len(info.description_suffix)] + info.description_suffix
    ds.SeriesNumber = int(src.get("SeriesNumber", 0) or 0) + info.series_number_offset
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.ContentDate, ds.ContentTime = date, time

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2" if src.get("PhotometricInterpretation") != "MONOCHROME1" else "MONOCHROME1"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = int(src.get("BitsStored", 16))
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.PixelData = np.ascontiguousarray(pixels.astype(pixels.dtype.newbyteorder("<"))).tobytes()
    ds["PixelData"].VR = "OW"
    method = LOSSY_METHODS.get(str(getattr(src.get("file_meta"), "TransferSyntaxUID", "")))
    if method and ds.get("LossyImageCompression") != "01":  # once lossy, always lossy (C.7.6.1.1.5)
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = method
    if "RescaleIntercept" not in ds:  # required for CT (dciodvfy errors without it)
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    ds.RescaleType = "HU"

    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def write_series(datasets: Sequence[Dataset], stored: Sequence[np.ndarray], folder: Path, info: DerivedSeriesInfo,
                 file_names: Sequence[str], series_uid: str | None = None, now: dt.datetime | None = None,
                 frames: Sequence[int | None] | None = None) -> list[Path]:
    """Write one derived image per source header into ``folder`` (which must exist). ``series_uid``
    defaults to the one derived from the source series UID; ``frames`` gives the source frame of
    each header taken from an enhanced multi-frame image."""
    if not info.description.startswith(DERIVED_MARKER):
        raise ValueError(f"DerivationDescription must start with {DERIVED_MARKER!r}")
    now = now or dt.datetime.now()
    series_uid = series_uid or derived_series_uid(str(datasets[0].SeriesInstanceUID), info)
    paths = []
    frames = frames if frames is not None else [None] * len(datasets)
    for src, pixels, name, frame in zip(datasets, stored, file_names, frames, strict=True):
        ds = derive_dataset(src, pixels, series_uid, info, now, frame)
        if info.transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(info.transfer_syntax, generate_instance_uid=False)  # lossless: decodes to the same values
        path = folder / name
        ds.save_as(path, enforce_file_format=True)  # an output error (disk full) fails the task
        paths.append(path)
    return paths
