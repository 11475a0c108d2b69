import csv
import json
import logging

import numpy as np
import pydicom
import pytest

from pipeline.denoise import Denoiser
from pipeline.errors import InputError
from pipeline.qa import METHODS
from pipeline.reader import scan
from pipeline.settings import Settings
from pipeline.study import QA_HEADER, SLICE_HEADER, process_scan, study_output_folder
from pipeline.uids import is_valid_uid

SETTINGS = Settings(progress=False, batch_size=2)


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def study(tmp_path, series_writer):
    rng = np.random.default_rng(0)
    root = tmp_path / "study"
    series_writer(root / "a", rng.integers(0, 2000, (3, 32, 32)).astype(np.uint16), series="s1")
    series_writer(root / "b", rng.integers(0, 2000, (2, 32, 32)).astype(np.uint16), series="s2")
    (root / "README.txt").write_text("export notes")
    return root


def test_study_outputs_reports_and_provenance(study, tmp_path, tiny_model, caplog):
    caplog.set_level(logging.INFO)
    result = scan(study)
    (outcome,) = process_scan(result, tmp_path / "out", SETTINGS, Denoiser(tiny_model, "cpu"))
    folder = study_output_folder(tmp_path / "out", outcome.study_uid)
    assert folder.is_dir() and not list((tmp_path / "out").glob(".*"))  # no temporaries left
    qa = _csv(folder / "qa_report.csv")
    assert list(qa[0]) == QA_HEADER
    assert [r["method"] for r in qa] == list(METHODS) * 2
    assert {r["window_low_hu"] + "/" + r["window_high_hu"] + "/" + r["sigma"] for r in qa} == {"-1000/1000/0.07"}
    assert sorted({int(r["slices"]) for r in qa}) == [2, 3]
    slices = _csv(folder / "qa_slices.csv")
    assert list(slices[0]) == SLICE_HEADER and len(slices) == 5 * len(METHODS)
    skipped = _csv(folder / "skipped.csv")
    assert [(r["path"].endswith("README.txt"), r["reason"].startswith("not a DICOM")) for r in skipped] == [(True, True)]
    prov = json.loads((folder / "provenance.json").read_text())
    assert prov["model"]["sha256"] == tiny_model.sha256 and prov["tool"]["name"] == "ct-denoise"
    assert prov["settings"]["qa_sigma"] == 0.07 and prov["settings"]["window"] == {"low_hu": -1000.0, "high_hu": 1000.0}
    assert sorted(s["source_series_uid"] for s in prov["series"]) == sorted(result.studies[outcome.study_uid].series)
    for s in outcome.series:
        sfolder = folder / s.derived_series_uid
        files = sorted(sfolder.glob("*.dcm"))
        assert len(files) == s.slices and is_valid_uid(s.derived_series_uid)
        assert json.loads((sfolder / "provenance.json").read_text())["source_series_uid"] == s.source_series_uid
        ds = pydicom.dcmread(files[0])
        assert ds.SeriesInstanceUID == s.derived_series_uid and ds.StudyInstanceUID == outcome.study_uid
    text = caplog.text + (folder / "provenance.json").read_text()
    assert "TEST^PHANTOM" not in text and "FAKE-TEST" not in text  # no patient name or ID


def test_a_failing_series_is_reported_and_the_rest_goes_on(study, tmp_path, tiny_model):
    bad = sorted((study / "b").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[:-500])  # truncated pixel data
    (outcome,) = process_scan(scan(study), tmp_path / "out", SETTINGS, Denoiser(tiny_model, "cpu"))
    assert len(outcome.series) == 1
    skipped = _csv(outcome.folder / "skipped.csv")
    failed = [r for r in skipped if r["path"] == str(bad)]
    assert len(failed) == 1 and "pixel data" in failed[0]["reason"]
    assert len([p for p in outcome.folder.iterdir() if p.is_dir()]) == 1  # nothing written for the bad series


def test_nothing_half_written_when_a_study_fails(tmp_path, series_writer, tiny_model):
    (path,) = series_writer(tmp_path / "s", np.zeros((1, 16, 16), np.uint16))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match="no series of the study could be denoised"):
        process_scan(scan(tmp_path / "s"), tmp_path / "out", SETTINGS, Denoiser(tiny_model, "cpu"))
    assert list((tmp_path / "out").iterdir()) == []


def test_existing_study_output_is_not_redone(study, tmp_path, tiny_model):
    out = tmp_path / "out"
    process_scan(scan(study), out, SETTINGS, Denoiser(tiny_model, "cpu"))
    assert process_scan(scan(study), out, SETTINGS, Denoiser(tiny_model, "cpu")) == []


def test_pydicom_ct_small_goes_through_the_whole_pipeline(ct_small, tmp_path, tiny_model):
    (outcome,) = process_scan(scan(ct_small), tmp_path / "out", SETTINGS, Denoiser(tiny_model, "cpu"))
    (series,) = outcome.series
    assert series.slices == 1
    (f,) = (outcome.folder / series.derived_series_uid).glob("*.dcm")
    src = pydicom.dcmread(ct_small / "CT_small.dcm")
    out = pydicom.dcmread(f)
    assert out.pixel_array.shape == (128, 128)
    assert out.ImagePositionPatient == src.ImagePositionPatient and out.PixelSpacing == src.PixelSpacing
    assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert len(_csv(outcome.folder / "qa_report.csv")) == len(METHODS)


def test_low_dose_qa_is_labelled_in_the_report(study, tmp_path, tiny_model):
    settings = Settings(progress=False, qa_noise="lowdose", qa_lowdose_i0=5e4)
    (outcome,) = process_scan(scan(study), tmp_path / "out", settings, Denoiser(tiny_model, "cpu"))
    rows = _csv(outcome.folder / "qa_report.csv")
    assert {(r["noise"], r["sigma"]) for r in rows} == {("lowdose I0=50000", "")}
