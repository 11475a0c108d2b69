"""Enhanced CT (multi-frame): per-frame geometry and rescale from the functional groups."""
import subprocess

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from pipeline.dicom.discovery import scan
from pipeline.dicom.reader import load_series
from pipeline.dicom.selection import CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE
from pipeline.dicom.uids import uuid_uid
from pipeline.inference.denoiser import Denoiser
from pipeline.settings import Settings
from pipeline.study_run import process_scan

Z = [6.0, 0.0, 9.0, 3.0]  # frames stored out of anatomical order
SLOPES = [1.0, 1.0, 2.0, 1.0]  # frame 3 has its own rescale


def _item(**kw):
    item = Dataset()
    for k, v in kw.items():
        setattr(item, k, v)
    return item


def _enhanced(path):
    ds = Dataset()
    ds.SOPClassUID = ENHANCED_CT_IMAGE_STORAGE
    ds.SOPInstanceUID = uuid_uid("enh", "sop")
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uuid_uid("enh", "study"), uuid_uid("enh", "series")
    ds.FrameOfReferenceUID = uuid_uid("enh", "for")
    ds.Modality, ds.PatientName, ds.PatientID = "CT", "TEST^ENHANCED", "FAKE-ENH"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.SeriesNumber, ds.InstanceNumber = 7, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 32
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.NumberOfFrames = len(Z)
    shared = _item(
        PixelMeasuresSequence=[_item(PixelSpacing=[0.8, 0.8], SliceThickness=3.0)],
        PlaneOrientationSequence=[_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])],
        CTXRayDetailsSequence=[_item(KVP=120)],
    )
    ds.SharedFunctionalGroupsSequence = [shared]
    frames, stored = [], []
    for z, slope in zip(Z, SLOPES):
        frames.append(_item(
            PlanePositionSequence=[_item(ImagePositionPatient=[-12.0, -12.0, z])],
            PixelValueTransformationSequence=[_item(RescaleSlope=slope, RescaleIntercept=-1024, RescaleType="HU")],
            FrameContentSequence=[_item(FrameAcquisitionNumber=1)],
        ))
        hu = 100.0 * z  # each frame's HU encodes its position
        stored.append(np.full((32, 32), (hu + 1024) / slope, np.uint16))
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = np.stack(stored).tobytes()
    ds["PixelData"].VR = "OW"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return ds


def test_frames_are_ordered_with_their_own_position_and_rescale(tmp_path):
    _enhanced(tmp_path / "enh.dcm")
    (study,) = scan(tmp_path).studies.values()
    series = load_series(next(iter(study.series.values())))
    assert series.frames == [1, 3, 0, 2]  # sorted by z: 0, 3, 6, 9
    np.testing.assert_allclose(series.hu[:, 0, 0], [0.0, 300.0, 600.0, 900.0])
    assert [float(d.ImagePositionPatient[2]) for d in series.datasets] == [0.0, 3.0, 6.0, 9.0]


def test_enhanced_source_is_written_as_classic_ct_images(tmp_path, tiny_model):
    (tmp_path / "in").mkdir()
    src = _enhanced(tmp_path / "in" / "enh.dcm")
    (outcome,) = process_scan(scan(tmp_path / "in"), tmp_path / "out", Settings(progress=False),
                              Denoiser(tiny_model, "cpu"))
    folder = outcome.folder / outcome.series[0].derived_series_uid
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == 4
    out = [pydicom.dcmread(f) for f in files]
    assert {d.SOPClassUID for d in out} == {CT_IMAGE_STORAGE}
    assert len({d.SOPInstanceUID for d in out}) == 4
    assert [float(d.ImagePositionPatient[2]) for d in out] == [0.0, 3.0, 6.0, 9.0]
    assert [d.SourceImageSequence[0].ReferencedFrameNumber for d in out] == [2, 4, 1, 3]
    assert all(d.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID for d in out)
    assert all("PerFrameFunctionalGroupsSequence" not in d and "NumberOfFrames" not in d for d in out)
    assert [float(d.SliceThickness) for d in out] == [3.0] * 4 and float(out[0].KVP) == 120
    img = sitk.ReadImage([str(f) for f in files])
    assert img.GetSize() == (32, 32, 4)
    np.testing.assert_allclose(img.GetSpacing(), (0.8, 0.8, 3.0), atol=1e-6)
    proc = subprocess.run(["dciodvfy", str(files[0])], capture_output=True, text=True)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error") and "Type 2" not in ln]
    assert errors == [], errors  # only the type-2 attributes this hand-made source lacks
