"""Bad input in a study: one line naming the file and the reason, the rest goes on, nothing half
written, inputs untouched."""
import csv
import hashlib

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import uid
from pydicom.encaps import encapsulate

from pipeline.dicom.discovery import scan
from pipeline.dicom.reader import load_series
from pipeline.errors import InputError
from pipeline.inference.denoiser import Denoiser
from pipeline.settings import Settings
from pipeline.study_run import process_scan
from tests.conftest import ct_dataset, write_series

RNG = np.random.default_rng(0)


def _vol(n=3):
    return RNG.integers(0, 3000, (n, 32, 32)).astype(np.uint16)


def _one(folder, series, mutate, n=3):
    """A series of n slices whose second slice is broken by ``mutate(dataset, path)``."""
    paths = write_series(folder / series, _vol(n), series=series, study="bad-study")
    ds = pydicom.dcmread(paths[1])
    mutate(ds, paths[1])
    return paths[1]


def _no_pixels(ds, path):
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)


def _nan_position(ds, path):
    ds.ImagePositionPatient = ["nan", "0", "1"]
    ds.save_as(path, enforce_file_format=True)


def _nan_slope(ds, path):
    ds.RescaleSlope = "nan"
    ds.save_as(path, enforce_file_format=True)


def _missing_position(ds, path):
    del ds.ImagePositionPatient
    ds.save_as(path, enforce_file_format=True)


def _absurd_rows(ds, path):
    ds.Rows = 65535
    ds.save_as(path, enforce_file_format=True)


def _undecodable(ds, path):
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7\x00\x0bnot a JPEG-LS codestream"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = uid.JPEGLSLossless
    ds.save_as(path, enforce_file_format=True)


def _truncated(ds, path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


CASES = {
    "nopixels": (_no_pixels, "pixel data"),
    "nanpos": (_nan_position, "ImagePositionPatient must be 3 finite numbers"),
    "nanslope": (_nan_slope, "RescaleSlope is not finite"),
    "nopos": (_missing_position, "ImagePositionPatient or ImageOrientationPatient missing"),
    "absurd": (_absurd_rows, "Rows x Columns 65535x32 x 1 frame(s) need 4194240 bytes"),
    "undecodable": (_undecodable, "pixel data cannot be decoded"),
    "truncated": (_truncated, ""),
}


@pytest.fixture
def bad_study(tmp_path):
    root = tmp_path / "study"
    write_series(root / "good", _vol(4), series="good", study="bad-study")
    broken = {name: _one(root, name, mutate) for name, (mutate, _) in CASES.items()}
    (root / "zero.dcm").write_bytes(b"")
    (root / "text.dcm").write_text("this is not DICOM\n")
    return root, broken


def _digests(root):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def test_each_bad_series_fails_alone_with_file_and_reason(bad_study, tmp_path, tiny_model, caplog):
    root, broken = bad_study
    before = _digests(root)
    (outcome,) = process_scan(scan(root), tmp_path / "out", Settings(progress=False), Denoiser(tiny_model, "cpu"))
    assert _digests(root) == before  # inputs never modified
    assert len(outcome.series) == 1  # only the good series was written
    assert [p.is_dir() for p in outcome.folder.iterdir()].count(True) == 1
    with open(outcome.folder / "skipped.csv", newline="") as fh:
        rows = {r["path"]: r["reason"] for r in csv.DictReader(fh)}
    for name, (_, reason) in CASES.items():
        path = str(broken[name])
        assert path in rows, name
        assert reason in rows[path] and "\n" not in rows[path], (name, rows[path])
        assert any(path in rec.getMessage() and rec.levelname == "ERROR" for rec in caplog.records) or \
            name == "truncated", name
    assert rows[str(root / "zero.dcm")] == "empty file (0 bytes)"
    assert rows[str(root / "text.dcm")].startswith("not a DICOM file")


def test_missing_geometry_in_every_slice_falls_back_with_a_warning(tmp_path):
    paths = write_series(tmp_path, _vol(3))
    for p in paths:
        ds = pydicom.dcmread(p)
        del ds.ImagePositionPatient
        ds.save_as(p, enforce_file_format=True)
    (study,) = scan(tmp_path).studies.values()
    series = load_series(next(iter(study.series.values())))
    assert len(series) == 3 and "ordered by InstanceNumber" in series.warnings[0]


SEED_FILE = ct_dataset(np.arange(32 * 32, dtype=np.uint16).reshape(32, 32), z=0.0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_bytes_give_a_stack_or_our_error(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "f.dcm"
    SEED_FILE.save_as(path, enforce_file_format=True)
    raw = bytearray(path.read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw)), label="length")]
    for _ in range(data.draw(st.integers(0, 8), label="flips")):
        if raw:
            i = data.draw(st.integers(0, len(raw) - 1), label="offset")
            raw[i] = data.draw(st.integers(0, 255), label="byte")
    path.write_bytes(bytes(raw))
    result = scan(folder)  # never raises for a file it can read
    for study in result.studies.values():
        for ref in study.series.values():
            try:
                series = load_series(ref)
            except InputError as exc:
                assert str(exc).startswith(str(path)) and "\n" not in str(exc)
                continue
            assert series.hu.ndim == 3 and series.hu.dtype == np.float32
