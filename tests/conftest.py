"""Shared fixtures: small synthetic CT series built by hand, and a tiny untrained model."""
from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from models.autoencoder import DenoisingAutoencoder
from models.store import LoadedModel, load_model, save_model
from pipeline.dicom.uids import uuid_uid

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_dicoms"


def ct_dataset(stored: np.ndarray, *, z: float, series: str = "s1", study: str = "st1", index: int = 1,
               slope: float = 1.0, intercept: float = -1024.0, spacing: float = 0.7,
               orientation: Sequence[float] = (1, 0, 0, 0, 1, 0), origin_xy: tuple[float, float] = (-20.0, -30.0),
               bits_stored: int | None = None, padding: int | None = None) -> Dataset:
    """A minimal but complete CT Image Storage dataset holding ``stored`` (int16 or uint16)."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = uuid_uid("test", study, series, index, z)
    ds.StudyInstanceUID = uuid_uid("test", study)
    ds.SeriesInstanceUID = uuid_uid("test", study, series)
    ds.FrameOfReferenceUID = uuid_uid("test", study, "for")
    ds.Modality = "CT"
    ds.PatientName, ds.PatientID = "TEST^PHANTOM", "FAKE-TEST"
    ds.StudyDate, ds.StudyTime = "20260101", "080000"
    ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = 5, index, 1
    ds.SeriesDescription = "TEST SERIES"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, col)
    ipp = origin_xy[0] * row + origin_xy[1] * col + z * normal
    ds.ImagePositionPatient = [round(float(v), 4) for v in ipp]
    ds.PixelSpacing = [spacing, spacing]
    ds.SliceThickness = 2.0
    ds.KVP = 120
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored or 16
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    if padding is not None:
        ds.PixelPaddingValue = padding
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def write_series(folder: Path, volume: np.ndarray, names: Sequence[str] | None = None, z0: float = 0.0,
                 dz: float = 2.0, index_offset: int = 0, **kw) -> list[Path]:
    """Write (N, H, W) stored values as a series; slice k lies at z0 + k * dz."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, img in enumerate(volume):
        ds = ct_dataset(img, z=z0 + k * dz, index=index_offset + k + 1, **kw)
        path = folder / (names[k] if names else f"slice{k:03d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def sitk_series(folder: Path):
    """The single DICOM series in ``folder`` as a SimpleITK image (GDCM's file sorting)."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    (sid,) = reader.GetGDCMSeriesIDs(str(folder))
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), sid))
    return reader.Execute()


@pytest.fixture
def series_writer() -> Callable[..., list[Path]]:
    return write_series


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """An untrained 4-channel model: fast, for tests of plumbing rather than quality."""
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    save_model(DenoisingAutoencoder(width=4, levels=1, convs_per_level=1), path,
               {"name": "tiny-test", "version": "0.0.1", "window_hu": [-1000, 1000]})
    return load_model(path)


@pytest.fixture(scope="session")
def tiny_conditioned_model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """An untrained noise-conditioned model (it takes the noise level as an input, as the shipped one)."""
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_cond") / "tiny_cond.safetensors"
    save_model(DenoisingAutoencoder(width=4, levels=1, convs_per_level=1, noise_map=True, blocks=1), path,
               {"name": "tiny-conditioned-test", "version": "0.0.1", "window_hu": [-1000, 1000]})
    return load_model(path)


@pytest.fixture
def ct_small(tmp_path: Path) -> Path:
    """pydicom's bundled real CT slice, copied into its own study folder."""
    from pydicom.data import get_testdata_file

    folder = tmp_path / "ct_small_study"
    folder.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "CT_small.dcm")
    return folder


@pytest.fixture(scope="session", autouse=True)
def project_luigi_config():
    """Read the project's luigi.cfg whatever the working directory is."""
    import luigi.configuration

    luigi.configuration.add_config_path(str(REPO / "luigi.cfg"))
    yield


@pytest.fixture
def pacs(tmp_path):
    """A real Orthanc (``bench/orthanc.py``) with its own storage, stopped after the test."""
    from bench.orthanc import Orthanc

    with Orthanc(tmp_path / "orthanc") as server:
        yield server
