"""Every transfer syntax the archive may hold decodes to the same HU (exactly when lossless)."""
import shutil
import subprocess

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate

from pipeline.dicom.codecs import missing_decoder_reason
from pipeline.dicom.discovery import scan
from pipeline.dicom.reader import load_series
from pipeline.errors import InputError
from pipeline.inference.denoiser import Denoiser
from pipeline.settings import Settings
from pipeline.study_run import process_scan
from pipeline.synthetic.phantom import Phantom, acquire
from tests.conftest import ct_dataset


def _image(signed: bool) -> np.ndarray:
    hu = acquire(Phantom(5, "chest").slice_hu(0.0, 64, 6.5), np.random.default_rng(0), 0.8, 8.0)
    stored = np.rint(hu + 1024)
    return np.clip(stored, -2048 if signed else 0, 4095).astype(np.int16 if signed else np.uint16)


def _dcmtk(flag):
    def encode(ds, arr, path):
        if not shutil.which("dcmcjpeg"):
            pytest.fail("dcmcjpeg missing: run bash .ci/install-dicom-tools (Debian dcmtk)")
        ds.save_as(path.with_suffix(".raw"), enforce_file_format=True)
        subprocess.run(["dcmcjpeg", flag, str(path.with_suffix(".raw")), str(path)], check=True, capture_output=True)
    return encode


def _native(ts, big_endian=False):
    def encode(ds, arr, path):
        ds.file_meta.TransferSyntaxUID = ts
        if big_endian:
            ds.PixelData = arr.astype(arr.dtype.newbyteorder(">")).tobytes()
        ds.save_as(path, enforce_file_format=True)
    return encode


def _pydicom(ts, **kw):
    def encode(ds, arr, path):
        ds.compress(ts, arr, generate_instance_uid=False, **kw)
        ds.save_as(path, enforce_file_format=True)
    return encode


def _htj2k(ts, level):
    def encode(ds, arr, path):
        ds.PixelData = encapsulate([imagecodecs.htj2k_encode(arr, level=level)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = ts
        ds.save_as(path, enforce_file_format=True)
    return encode


# name -> (encoder, maximum |error| in stored values)
CODECS = {
    "implicit VR LE": (_native(uid.ImplicitVRLittleEndian), 0),
    "explicit VR LE": (_native(uid.ExplicitVRLittleEndian), 0),
    "explicit VR BE": (_native(uid.ExplicitVRBigEndian, big_endian=True), 0),
    "deflated": (_native(uid.DeflatedExplicitVRLittleEndian), 0),
    "RLE lossless": (_pydicom(uid.RLELossless), 0),
    "JPEG lossless SV1": (_dcmtk("+e1"), 0),
    "JPEG lossless P14": (_dcmtk("+el"), 0),
    "JPEG-LS lossless": (_pydicom(uid.JPEGLSLossless), 0),
    "JPEG-LS near-lossless": (_pydicom(uid.JPEGLSNearLossless, jls_error=2), 2),
    "JPEG 2000 lossless": (_pydicom(uid.JPEG2000Lossless), 0),
    "JPEG 2000 lossy": (_pydicom(uid.JPEG2000, j2k_cr=[8]), 300),
    "HTJ2K lossless": (_htj2k(uid.HTJ2KLossless, 0), 0),
}


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned12", "signed16"])
@pytest.mark.parametrize("name", list(CODECS))
def test_transfer_syntax_decodes_to_the_same_hu(name, signed, tmp_path):
    encode, tolerance = CODECS[name]
    arr = _image(signed)
    ds = ct_dataset(arr, z=0.0, bits_stored=16 if signed else 12, slope=1.0 if signed else 0.5,
                    intercept=-1024.0 if signed else -512.0)
    path = tmp_path / "img"
    encode(ds, arr, path)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID != "" and path.exists()
    (study,) = scan(tmp_path).studies.values()
    series = load_series(next(iter(study.series.values())))
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    expected = arr.astype(np.float32) * slope + intercept
    err = np.abs(series.hu[0] - expected) / slope  # in stored values
    assert err.max() <= tolerance + 1e-3, (name, err.max())
    if tolerance > 2:  # lossy: small on average
        assert np.sqrt(np.mean(err**2)) < 30


def test_lossy_source_makes_a_lossy_flagged_output(tmp_path, tiny_model):
    arr = _image(False)
    ds = ct_dataset(arr, z=0.0, bits_stored=12)
    src = tmp_path / "in"
    src.mkdir()
    _pydicom(uid.JPEGLSNearLossless, jls_error=2)(ds, arr, src / "img")
    (outcome,) = process_scan(scan(src), tmp_path / "out", Settings(progress=False), Denoiser(tiny_model, "cpu"))
    (f,) = (outcome.folder / outcome.series[0].derived_series_uid).glob("*.dcm")
    out = pydicom.dcmread(f)
    assert out.LossyImageCompression == "01" and "ISO_14495_1" in str(out.LossyImageCompressionMethod)
    assert out.file_meta.TransferSyntaxUID == uid.ExplicitVRLittleEndian


def test_missing_decoder_names_the_package(tmp_path, monkeypatch):
    arr = _image(False)
    ds = ct_dataset(arr, z=0.0, bits_stored=12)
    _pydicom(uid.JPEG2000Lossless)(ds, arr, tmp_path / "img")
    decoder_type = type(pydicom.pixels.get_decoder(uid.JPEG2000Lossless))
    monkeypatch.setattr(decoder_type, "is_available", property(lambda self: False))
    assert "pip install pylibjpeg-openjpeg" in missing_decoder_reason(uid.JPEG2000Lossless)
    with pytest.raises(InputError, match=r"img: no decoder installed for JPEG 2000 .* pip install pylibjpeg-openjpeg"):
        load_series(next(iter(next(iter(scan(tmp_path).studies.values())).series.values())))


def test_real_scanner_jpeg2000_slice_reads_as_plausible_hu():
    """pydicom's J2K_pixelrep_mismatch.dcm: a real head slice (Canon/Toshiba, 512x512, lossless
    JPEG 2000) whose codestream signedness disagrees with PixelRepresentation; read wrongly, the
    negative values would wrap to huge positive ones."""
    (study,) = scan(get_testdata_file("J2K_pixelrep_mismatch.dcm")).studies.values()
    hu = load_series(next(iter(study.series.values()))).hu[0]
    assert hu.shape == (512, 512)
    assert 20 <= np.median(hu[300:360, 220:300]) <= 50  # brain
    assert np.median(hu[:20, :20]) == -2000  # the scanner's padding outside the field of view
    assert 0.01 < (hu > 700).mean() < 0.1 and hu.max() < 3000  # skull, no wrapped values


@pytest.mark.parametrize("name", ["rle", "jpeg_ls_lossless", "jpeg2000_lossless"])
@pytest.mark.parametrize("dtype", [np.uint16, np.int16])
def test_lossless_output_decodes_to_the_uncompressed_output_exactly(tmp_path, series_writer, tiny_model, name, dtype):
    from pipeline.dicom.codecs import OUTPUT_SYNTAXES
    from pipeline.inference.denoiser import Denoiser
    from pipeline.settings import Settings
    from pipeline.study_run import process_scan

    rng = np.random.default_rng(3)
    vol = rng.integers(0, 3000, (2, 40, 48)).astype(dtype) - (1024 if dtype == np.int16 else 0)
    if dtype == np.int16:
        vol[:, :4] = -2000  # padding, signed
    series_writer(tmp_path / "in", vol.astype(dtype), intercept=0.0 if dtype == np.int16 else -1024.0,
                  padding=-2000 if dtype == np.int16 else None)
    outputs = {}
    for syntax in ("explicit_le", name):
        (outcome,) = process_scan(scan(tmp_path / "in"), tmp_path / syntax,
                                  Settings(progress=False, qa_panels=0, output_transfer_syntax=syntax),
                                  Denoiser(tiny_model, "cpu"))
        (series,) = outcome.series
        outputs[syntax] = [pydicom.dcmread(f) for f in sorted((outcome.folder / series.derived_series_uid).glob("*.dcm"))]
    plain, packed = outputs["explicit_le"], outputs[name]
    assert [d.SOPInstanceUID for d in plain] == [d.SOPInstanceUID for d in packed]  # lossless: the same images
    for a, b in zip(plain, packed, strict=True):
        assert b.file_meta.TransferSyntaxUID == OUTPUT_SYNTAXES[name]
        np.testing.assert_array_equal(a.pixel_array, b.pixel_array)
        assert "LossyImageCompression" not in b or b.LossyImageCompression == "00"
    assert all(b["PixelData"].is_undefined_length for b in packed)  # encapsulated (compressed) pixel data


def test_an_unknown_output_syntax_fails_before_any_file_is_read():
    from pipeline.errors import ConfigError
    from pipeline.settings import Settings

    with pytest.raises(ConfigError, match="output_transfer_syntax must be one of"):
        Settings(output_transfer_syntax="jpeg_baseline")
