import datetime as dt

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from pipeline.dicom.discovery import scan
from pipeline.dicom.reader import load_series
from pipeline.dicom.selection import DERIVED_MARKER
from pipeline.dicom.uids import is_valid_uid
from pipeline.dicom.writer import DerivedSeriesInfo, hu_to_stored, stack_to_stored, stored_range, write_series
from tests.conftest import ct_dataset, sitk_series

INFO = DerivedSeriesInfo(f"{DERIVED_MARKER} test: denoised by model X 1.0", "fingerprint-1")



@pytest.fixture
def source(tmp_path, series_writer):
    rng = np.random.default_rng(0)
    vol = rng.integers(-1000, 2500, size=(5, 24, 20)).astype(np.int16)
    vol[:, :3, :] = -2000  # padding rows
    c, s = np.cos(0.2), np.sin(0.2)
    series_writer(tmp_path / "src", vol, z0=-10.0, dz=2.5, intercept=-1024.0, padding=-2000,
                  orientation=(c, s, 0, -s, c, 0), origin_xy=(-7.0, -9.0), spacing=0.6)
    (study,) = scan(tmp_path / "src").studies.values()
    return load_series(next(iter(study.series.values())))


def _write(series, tmp_path, hu):
    out = tmp_path / "out"
    out.mkdir(parents=True)
    stored = stack_to_stored(hu, series.hu, series.datasets)
    names = [f"{i:03d}.dcm" for i in range(len(series))]
    write_series(series.datasets, stored, out, INFO, names, now=dt.datetime(2026, 11, 24, 1, 2, 3))
    return out, [pydicom.dcmread(out / n) for n in names]


def test_derived_series_tags_and_uids(source, tmp_path):
    out, derived = _write(source, tmp_path, source.hu + 5.0)
    series_uids = {d.SeriesInstanceUID for d in derived}
    assert len(series_uids) == 1
    (new_series,) = series_uids
    assert is_valid_uid(new_series) and new_series != source.series_uid
    for src, d in zip(source.datasets, derived):
        assert is_valid_uid(d.SOPInstanceUID) and d.SOPInstanceUID != src.SOPInstanceUID
        assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
        assert d.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert d.file_meta.FileMetaInformationVersion == b"\x00\x01"
        for kw in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName", "InstanceNumber",
                   "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
                   "RescaleSlope", "RescaleIntercept", "PixelPaddingValue", "PixelRepresentation", "BitsStored"):
            assert d[kw].value == src[kw].value, kw
        assert list(d.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
        assert d.DerivationDescription.startswith(DERIVED_MARKER)
        assert d.DerivationCodeSequence[0].CodeValue == "113087"
        (ref,) = d.SourceImageSequence
        assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID
        assert ref.ReferencedSOPClassUID == src.SOPClassUID
        assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
        assert d.SeriesDescription == "TEST SERIES DENOISED"
        assert d.SeriesNumber == src.SeriesNumber + 1000
        assert (d.SeriesDate, d.ContentTime) == ("20261124", "010203")


def test_stored_values_follow_source_rescale_and_keep_padding_and_out_of_window_hu(source, tmp_path):
    out, derived = _write(source, tmp_path, source.hu + 5.4)
    for src_hu, d in zip(source.hu, derived):
        px = d.pixel_array
        assert px.dtype == np.int16
        pad = px == -2000
        np.testing.assert_array_equal(pad[:3], True)  # padding kept exactly
        hu = px.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
        np.testing.assert_allclose(hu[~pad], np.rint(src_hu[~pad] + 5.4), atol=0.5)
        assert hu.max() > 1400  # HU above the window (1000) survive


def test_stored_values_are_clipped_to_bits_stored():
    ds = ct_dataset(np.zeros((1, 3), np.uint16), z=0.0, bits_stored=12, intercept=-1024)
    assert stored_range(ds) == (0, 4095)
    stored = hu_to_stored(np.array([[-5000.0, 0.0, 9000.0]]), ds)
    assert stored.tolist() == [[0, 1024, 4095]] and stored.dtype == np.uint16


def test_pydicom_and_simpleitk_read_back_the_same_geometry(source, tmp_path):
    out, derived = _write(source, tmp_path, source.hu)
    src_img, out_img = sitk_series(tmp_path / "src"), sitk_series(out)
    assert out_img.GetSize() == src_img.GetSize() == (20, 24, 5)
    np.testing.assert_allclose(out_img.GetSpacing(), src_img.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(out_img.GetOrigin(), src_img.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(out_img.GetDirection(), src_img.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out_img), sitk.GetArrayFromImage(src_img))
    # our own output is recognised by its marker and never denoised again
    assert scan(out).studies == {}
    assert all("this tool derived" in s.reason for s in scan(out).skipped)


def test_rewriting_gives_the_same_uids(source, tmp_path):
    _, first = _write(source, tmp_path / "a", source.hu)
    _, second = _write(source, tmp_path / "b", source.hu)
    assert [d.SOPInstanceUID for d in first] == [d.SOPInstanceUID for d in second]


def test_padding_written_as_us_on_signed_pixels_is_read_in_the_pixel_representation():
    """GE writes PixelPaddingValue as US 63536 on signed data: that is -2000, and it is kept."""
    from pipeline.dicom.writer import padding_value

    stored = np.array([[-2000, -1024], [0, 1000]], np.int16)
    ds = ct_dataset(stored, z=0.0, padding=-2000)
    ds["PixelPaddingValue"].VR, ds.PixelPaddingValue = "US", 63536
    assert padding_value(ds) == -2000
    out = hu_to_stored(np.array([[-1000.0, -1010.0], [-1024.0, 0.0]], np.float32), ds, source_stored=stored)
    assert out.dtype == np.int16 and out.tolist() == [[-2000, 14], [0, 1024]]
    ds.PixelRepresentation = 0
    assert padding_value(ds) == 63536  # unsigned data: the value as written


def test_a_real_ge_slice_with_us_padding_on_signed_pixels_goes_through(tmp_path, tiny_model):
    """tests/data/lidc_ge_padding.dcm (LIDC-IDRI, CC BY 3.0; see tests/data/README.md)."""
    import shutil

    from pipeline.dicom.writer import padding_value
    from pipeline.inference.denoiser import Denoiser
    from pipeline.settings import Settings
    from pipeline.study_run import process_scan
    from tests.conftest import REPO

    src = REPO / "tests" / "data" / "lidc_ge_padding.dcm"
    header = pydicom.dcmread(src, stop_before_pixels=True)
    assert (header["PixelPaddingValue"].VR, header.PixelPaddingValue, header.PixelRepresentation) == ("US", 63536, 1)
    assert padding_value(header) == -2000
    (tmp_path / "in").mkdir()
    shutil.copy(src, tmp_path / "in" / "slice.dcm")
    (outcome,) = process_scan(scan(tmp_path / "in"), tmp_path / "out", Settings(progress=False, qa_panels=0),
                              Denoiser(tiny_model, "cpu"))
    (series,) = outcome.series
    (written,) = (outcome.folder / series.derived_series_uid).glob("*.dcm")
    out = pydicom.dcmread(written)
    assert out.PixelPaddingValue == 63536 and out.pixel_array.shape == (512, 512)
    source_pixels = pydicom.dcmread(src).pixel_array
    assert np.abs(out.pixel_array.astype(int) - source_pixels).mean() < 200  # denoised, not garbage
