"""Generate ``sample_dicoms/``: synthetic CT studies written as a scanner would write them.

    python -m pipeline.synthetic.samples sample_dicoms

Seeded: re-running it reproduces the same files byte for byte. The patients are obviously fake
(``PHANTOM^...``, IDs ``FAKE-...``). Layout::

    chest/SE1/IM<n>          CT chest, soft kernel, 2.5 mm, RLE Lossless, unsigned 12-bit, shuffled names
    chest/SE2/<hex>          same positions, sharp kernel (noisier), RLE Lossless
    abdomen/<hex>.dcm        CT abdomen, 5 mm, Explicit VR Little Endian, signed 16-bit,
                             PixelPaddingValue -2000 outside the reconstruction circle
"""
from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless

from pipeline.dicom.uids import uuid_uid
from pipeline.synthetic.phantom import Phantom, acquire

STUDY_DATE = "20260101"
IMPLEMENTATION_UID = uuid_uid("ct-denoise sample generator")


@dataclass(frozen=True)
class SeriesSpec:
    folder: str
    number: int
    description: str
    kernel: str
    psf_sigma_px: float
    noise_hu: float
    names: str  # "IM" (IM1, IM2, ... shuffled) or "hex" or "hex.dcm"


@dataclass(frozen=True)
class StudySpec:
    key: str
    region: str
    seed: int  # < 100 000 (training uses >= 1 000 000)
    patient_name: str
    patient_id: str
    description: str
    slices: int
    thickness_mm: float
    z0_mm: float
    pixel_spacing: float
    signed: bool
    transfer_syntax: str
    padding: int | None
    series: tuple[SeriesSpec, ...]


STUDIES = (
    StudySpec("chest", "chest", 20261, "PHANTOM^CHEST^SYNTHETIC", "FAKE-0001", "CT CHEST SYNTHETIC PHANTOM",
              16, 2.5, -60.0, 0.78125, False, RLELossless, None,
              (SeriesSpec("SE1", 2, "CHEST 2.5 SOFT", "SOFT", 1.0, 10.0, "IM"),
               SeriesSpec("SE2", 3, "CHEST 2.5 SHARP", "SHARP", 0.6, 25.0, "hex"))),
    StudySpec("abdomen", "abdomen", 20262, "PHANTOM^ABDOMEN^SYNTHETIC", "FAKE-0002", "CT ABDOMEN SYNTHETIC PHANTOM",
              16, 5.0, -40.0, 0.7421875, True, ExplicitVRLittleEndian, -2000,
              (SeriesSpec("", 2, "ABDOMEN 5.0 STANDARD", "STANDARD", 0.9, 12.0, "hex.dcm"),)),
)


def _uid(*parts: object) -> str:
    return uuid_uid("ct-denoise sample", *parts)


def _names(spec: SeriesSpec, n: int, rng: np.random.Generator) -> list[str]:
    if spec.names == "IM":
        order = rng.permutation(n)  # file numbers unrelated to anatomical order
        return [f"IM{int(order[k]) + 1}" for k in range(n)]
    ext = ".dcm" if spec.names.endswith(".dcm") else ""
    return [f"{int(rng.integers(0, 2**40)):010x}{ext}" for _ in range(n)]


def _base_dataset(study: StudySpec, series: SeriesSpec) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = STUDY_DATE
    ds.StudyTime, ds.SeriesTime = "080000", f"08{series.number:02d}00"
    ds.AccessionNumber = f"FAKEACC{study.seed}"
    ds.Modality = "CT"
    ds.Manufacturer = "SYNTHETIC"
    ds.InstitutionName = "Synthetic Phantom Hospital"
    ds.ReferringPhysicianName = ""
    ds.StationName = "PHANTOMCT"
    ds.StudyDescription = study.description
    ds.SeriesDescription = series.description
    ds.ManufacturerModelName = "ct-denoise sample generator"
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.BodyPartExamined = study.region.upper()
    ds.SliceThickness = f"{study.thickness_mm:g}"
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = f"{study.pixel_spacing * 512:g}"
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "150"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "500"
    ds.XRayTubeCurrent = "200"
    ds.Exposure = "100"
    ds.ConvolutionKernel = series.kernel
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = _uid(study.key, "study")
    ds.SeriesInstanceUID = _uid(study.key, series.folder, "series")
    ds.StudyID = "1"
    ds.SeriesNumber = series.number
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = _uid(study.key, "frame")
    ds.PositionReferenceIndicator = ""
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 512
    ds.PixelSpacing = [f"{study.pixel_spacing:g}", f"{study.pixel_spacing:g}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 16 if study.signed else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if study.signed else 0
    if study.padding is not None:
        ds.PixelPaddingValue = study.padding
    ds.WindowCenter = ["40", "-600"] if study.region == "chest" else ["40", "60"]
    ds.WindowWidth = ["400", "1500"] if study.region == "chest" else ["400", "350"]
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    ds.BurnedInAnnotation = "NO"
    return ds


def long_study(slices: int, key: str = "long", seed: int = 30001, spacing_mm: float = 1.0) -> StudySpec:
    """An abdomen study of one series of ``slices`` 512x512 slices ``spacing_mm`` apart (uncompressed),
    for throughput and memory benchmarks (1 mm: stacks for a model with slice context; above its
    largest step, 4.5 mm, every slice runs alone)."""
    return StudySpec(key, "abdomen", seed, "PHANTOM^LONG^SYNTHETIC", "FAKE-0003", "CT ABDOMEN LONG SYNTHETIC",
                     slices, spacing_mm, -slices * spacing_mm / 2, 0.78125, True, ExplicitVRLittleEndian, None,
                     (SeriesSpec("", 2, f"ABDOMEN {spacing_mm:.1f} STANDARD", "STANDARD", 0.9, 12.0, "IM"),))


def generate(out_dir: Path | str, studies: tuple[StudySpec, ...] = STUDIES) -> list[Path]:
    """Write every sample study (default: those of ``sample_dicoms/``) under ``out_dir``
    (existing study folders are replaced)."""
    out_dir = Path(out_dir)
    written = []
    for study in studies:
        study_dir = out_dir / study.key
        if study_dir.exists():
            shutil.rmtree(study_dir)
        phantom = Phantom(study.seed, study.region)
        for s_idx, series in enumerate(study.series):
            folder = study_dir / series.folder if series.folder else study_dir
            folder.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([study.seed, s_idx])
            names = _names(series, study.slices, rng)
            for k in range(study.slices):
                z = study.z0_mm + k * study.thickness_mm
                hu = phantom.slice_hu(z, 512, study.pixel_spacing)
                hu = acquire(hu, np.random.default_rng([study.seed, s_idx, k]), series.psf_sigma_px,
                             series.noise_hu, fov_radius_px=255.0)
                stored = np.rint(hu + 1024.0)
                lo, hi = (-32768, 32767) if study.signed else (0, 4095)
                stored = np.clip(stored, lo, hi).astype(np.int16 if study.signed else np.uint16)
                if study.padding is not None:
                    yy, xx = np.ogrid[:512, :512]
                    stored[(yy - 255.5) ** 2 + (xx - 255.5) ** 2 > 255.0**2] = study.padding
                ds = _base_dataset(study, series)
                ds.SOPInstanceUID = _uid(study.key, series.folder, k, "image")
                ds.InstanceNumber = k + 1
                ds.ContentTime = ds.AcquisitionTime = f"08{series.number:02d}{k % 60:02d}"  # valid TM for long series
                ds.InstanceCreationDate, ds.InstanceCreationTime = STUDY_DATE, ds.ContentTime
                ds.ImagePositionPatient = [f"{-study.pixel_spacing * 255.5:g}", f"{-study.pixel_spacing * 255.5:g}", f"{z:g}"]
                ds.SliceLocation = f"{z:g}"
                meta = FileMetaDataset()
                meta.FileMetaInformationVersion = b"\x00\x01"
                meta.MediaStorageSOPClassUID = CTImageStorage
                meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                meta.TransferSyntaxUID = ExplicitVRLittleEndian
                meta.ImplementationClassUID = IMPLEMENTATION_UID
                meta.ImplementationVersionName = "CTDENOISE_SAMPLE"
                ds.file_meta = meta
                if study.transfer_syntax == RLELossless:
                    ds.compress(RLELossless, stored, encoding_plugin="pydicom", generate_instance_uid=False)
                else:
                    ds.PixelData = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
                    ds["PixelData"].VR = "OW"
                path = folder / names[k]
                ds.save_as(path, enforce_file_format=True)
                written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path, nargs="?", default=Path("sample_dicoms"))
    args = ap.parse_args(argv)
    files = generate(args.out_dir)
    size = sum(p.stat().st_size for p in files)
    print(f"wrote {len(files)} files, {size / 1e6:.1f} MB, under {args.out_dir}")


if __name__ == "__main__":
    main()
