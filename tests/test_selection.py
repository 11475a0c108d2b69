"""What is denoised and what is skipped, with the reason, in archive-like folders."""
import numpy as np
import pydicom
import pytest

from pipeline.dicom.discovery import scan
from pipeline.dicom.reader import load_series
from pipeline.dicom.selection import SelectionRules
from pipeline.dicom.uids import is_valid_uid
from pipeline.errors import ConfigError
from tests.conftest import ct_dataset

IMG = np.zeros((32, 32), np.uint16)


def _save(ds, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _reasons(result):
    return {s.path.rsplit("/", 1)[-1]: s.reason for s in result.skipped}


def test_screenshots_dose_reports_and_other_objects_are_skipped(tmp_path):
    sc = ct_dataset(IMG, z=0.0, series="sc")
    sc.SOPClassUID = sc.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    _save(sc, tmp_path / "sc")
    rgb = ct_dataset(IMG, z=0.0, series="rgb")
    rgb.PhotometricInterpretation, rgb.SamplesPerPixel = "RGB", 3
    rgb.PixelData = np.zeros((32, 32, 3), np.uint8).tobytes()
    rgb.BitsAllocated = rgb.BitsStored = 8
    rgb.HighBit = 7
    rgb.PlanarConfiguration = 0
    _save(rgb, tmp_path / "rgb")
    dose = ct_dataset(IMG, z=0.0, series="dose")
    dose.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE", "DOSE INFO"]
    _save(dose, tmp_path / "dose")
    icon = ct_dataset(np.zeros((8, 8), np.uint16), z=0.0, series="icon")
    _save(icon, tmp_path / "icon")
    dicomdir = pydicom.Dataset()
    dicomdir.SOPClassUID = "1.2.840.10008.1.3.10"
    dicomdir.SOPInstanceUID = "1.2.3.4"
    dicomdir.file_meta = pydicom.dataset.FileMetaDataset()
    dicomdir.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    dicomdir.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    dicomdir.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    _save(dicomdir, tmp_path / "DICOMDIR")
    result = scan(tmp_path)
    assert result.studies == {}
    r = _reasons(result)
    assert r["sc"].startswith("Secondary Capture")
    assert "RGB is not greyscale" in r["rgb"]
    assert r["dose"].startswith("ImageType SCREEN SAVE")
    assert r["icon"] == "matrix 8x8 is smaller than 16x16"
    assert r["DICOMDIR"].startswith("DICOMDIR")


def test_scanner_derived_reconstructions_are_denoised(tmp_path):
    ds = ct_dataset(IMG, z=0.0)
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL", "MPR"]  # a scanner's thin-slice reformat
    _save(ds, tmp_path / "mpr")
    assert len(scan(tmp_path).studies) == 1


def test_single_axial_image_is_a_series_but_a_lone_scout_or_report_is_not(tmp_path):
    _save(ct_dataset(IMG, z=0.0, series="axial"), tmp_path / "axial" / "one")
    _save(ct_dataset(IMG, z=0.0, series="sag", orientation=(0, 1, 0, 0, 0, -1)), tmp_path / "sag" / "one")
    _save(ct_dataset(np.zeros((32, 48), np.uint16), z=0.0, series="wide"), tmp_path / "wide" / "one")
    result = scan(tmp_path)
    (study,) = result.studies.values()
    assert [len(r.files) for r in study.series.values()] == [1]
    r = {s.path.split("/")[-2]: s.reason for s in result.skipped}
    assert r == {"sag": "lone non-axial image (localizer/scout)",
                 "wide": "lone non-square 32x48 image (screenshot or report)"}


def test_localizer_inside_a_series_is_dropped_by_geometry(tmp_path, series_writer):
    series_writer(tmp_path, np.zeros((4, 32, 32), np.uint16))
    scout = ct_dataset(IMG, z=0.0, index=9, orientation=(0, 1, 0, 0, 0, -1))  # no LOCALIZER flag
    _save(scout, tmp_path / "scout")
    result = scan(tmp_path)
    (study,) = result.studies.values()
    (ref,) = study.series.values()
    assert len(ref.files) == 4
    assert _reasons(result)["scout"].startswith("lone image whose orientation differs")


def test_rules_are_configurable():
    rules = SelectionRules(skip_image_types=())
    ds = ct_dataset(IMG, z=0.0)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    assert rules.file_skip_reason(ds) is None
    assert SelectionRules().file_skip_reason(ds).startswith("ImageType LOCALIZER")
    with pytest.raises(ConfigError, match="nothing would be denoised"):
        SelectionRules(sop_classes=())


def test_files_without_preamble_zero_bytes_and_garbage(tmp_path):
    ds = ct_dataset(IMG, z=0.0)
    raw = tmp_path / "nopreamble"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    del ds.file_meta  # a bare implicit-VR dataset: no preamble, no 'DICM', no file meta
    ds.save_as(raw, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert raw.read_bytes()[128:132] != b"DICM"
    (tmp_path / "zero.dcm").write_bytes(b"")
    (tmp_path / "garbage.dcm").write_bytes(b"\x00" * 50 + b"hello" * 100)
    result = scan(tmp_path)
    (study,) = result.studies.values()
    assert len(load_series(next(iter(study.series.values())))) == 1
    r = _reasons(result)
    assert r["zero.dcm"] == "empty file (0 bytes)"
    assert r["garbage.dcm"].startswith("not a DICOM file")


def test_unsafe_uids_and_descriptions_never_reach_a_path(tmp_path, caplog):
    bad = ct_dataset(IMG, z=0.0)
    bad.StudyInstanceUID = "../../etc"
    _save(bad, tmp_path / "bad")
    evil = ct_dataset(IMG, z=0.0, series="evil")
    evil.SeriesDescription = "../../x\x01"
    evil.PatientName = "A/B^..\\C"
    _save(evil, tmp_path / "evil")
    nameless = ct_dataset(IMG, z=0.0, series="nameless")
    nameless.StudyInstanceUID = ""
    _save(nameless, tmp_path / "nameless")
    result = scan(tmp_path)
    assert not result.skipped and len(result.studies) == 3  # the description does not matter: only UIDs make paths
    stand_in = [s for s in result.studies.values() if s.source_study_uid]
    assert [s.source_study_uid for s in stand_in] == ["../../etc"]
    assert all(is_valid_uid(uid) for uid in result.studies)
    assert "StudyInstanceUID '../../etc' is not a DICOM UID" in caplog.text
    assert "StudyInstanceUID missing; 2.25." in caplog.text


def test_a_folder_without_series_says_why_each_file_was_left_out():
    from pipeline.dicom.discovery import Skipped, skipped_summary

    files = [Skipped(f"/in/f{k}.dcm", f"reason {k}") for k in range(12)]
    text = skipped_summary(files)
    assert text.startswith("12 files skipped: f0.dcm: reason 0; f1.dcm: reason 1;")
    assert "f9.dcm: reason 9; and 2 more (see the log)" in text and "f10" not in text and "\n" not in text
    assert skipped_summary(files[:1]) == "1 file skipped: f0.dcm: reason 0"
    assert skipped_summary([]) == "no files found"
