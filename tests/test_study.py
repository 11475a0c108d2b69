import csv
import json
import logging

import numpy as np
import pydicom
import pytest

from pipeline.dicom.discovery import scan
from pipeline.dicom.uids import is_valid_uid
from pipeline.errors import InputError
from pipeline.inference.denoiser import Denoiser
from pipeline.qa.series import METHODS
from pipeline.settings import Settings
from pipeline.study_run import QA_HEADER, SLICE_HEADER, process_scan, study_output_folder

BLIND = [m for m in METHODS if m != "autoencoder_told"]  # the tiny test model is blind: no told row
SETTINGS = Settings(progress=False, batch_size=2, qa_every=1)


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
    assert [r["method"] for r in qa] == BLIND * 2
    assert {r["strength"] for r in qa} == {"medium (50 % of the estimated noise)"}
    assert all(float(r["noise_estimate_hu"]) > 0 and r["noise_confidence"] == "low" for r in qa)  # no flat region
    assert {r["model_told"] for r in qa if r["method"] == "autoencoder"} == {
        "nothing: noise estimated from the QA copies, strength full (as the derived series)"}
    assert {r["window_low_hu"] + "/" + r["window_high_hu"] + "/" + r["sigma"] for r in qa} == {"-1000/1000/0.07"}
    assert sorted({int(r["slices"]) for r in qa}) == [2, 3]
    slices = _csv(folder / "qa_slices.csv")
    assert list(slices[0]) == SLICE_HEADER and len(slices) == 5 * len(BLIND)
    skipped = _csv(folder / "skipped.csv")
    assert [(r["path"].endswith("README.txt"), r["reason"].startswith("not a DICOM")) for r in skipped] == [(True, True)]
    prov = json.loads((folder / "provenance.json").read_text())
    assert prov["model"]["sha256"] == tiny_model.sha256 and prov["tool"]["name"] == "ct-denoise"
    assert prov["settings"]["strength"] == "medium"
    assert prov["settings"]["qa_sigma"] == 0.07 and prov["settings"]["window"] == {"low_hu": -1000.0, "high_hu": 1000.0}
    assert sorted(s["source_series_uid"] for s in prov["series"]) == sorted(result.studies[outcome.study_uid].series)
    for s in outcome.series:
        sfolder = folder / s.derived_series_uid
        files = sorted(sfolder.glob("*.dcm"))
        assert len(files) == s.slices and is_valid_uid(s.derived_series_uid)
        assert json.loads((sfolder / "provenance.json").read_text())["source_series_uid"] == s.source_series_uid
        ds = pydicom.dcmread(files[0])
        assert ds.SeriesInstanceUID == s.derived_series_uid and ds.StudyInstanceUID == outcome.study_uid
    pngs = sorted(p.name for p in folder.glob("qa_*.png"))
    expected = [f"qa_{s.derived_series_uid}_{part}.png" for s in outcome.series
                for part in ["psnr"] + [f"slice{i:04d}" for i in range(1, s.slices + 1)]]
    assert pngs == sorted(expected)  # 3 panels at most: every slice of these short series
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
    assert len(_csv(outcome.folder / "qa_report.csv")) == len(BLIND)


def test_low_dose_qa_is_labelled_in_the_report(study, tmp_path, tiny_model):
    settings = Settings(progress=False, qa_noise="lowdose", qa_lowdose_i0=5e4)
    (outcome,) = process_scan(scan(study), tmp_path / "out", settings, Denoiser(tiny_model, "cpu"))
    rows = _csv(outcome.folder / "qa_report.csv")
    assert {(r["noise"], r["sigma"]) for r in rows} == {("lowdose I0=50000", "")}


def test_streamed_chunks_give_the_same_series_as_one_pass(tmp_path, series_writer, tiny_model):
    from pipeline.dicom.reader import load_series
    from pipeline.study_run import qa_sample

    rng = np.random.default_rng(5)
    volume = rng.integers(0, 2000, (11, 24, 24)).astype(np.uint16)
    names = [f"IM{k}" for k in (7, 2, 9, 0, 4, 1, 10, 3, 8, 5, 6)]  # file order says nothing
    series_writer(tmp_path / "in", volume, names=names)
    denoiser = Denoiser(tiny_model, "cpu", batch_size=3)
    streamed = Settings(progress=False, chunk_slices=4, prefetch_chunks=1, io_workers=2, qa_every=3)
    (outcome,) = process_scan(scan(tmp_path / "in"), tmp_path / "out", streamed, denoiser)
    (series,) = outcome.series
    files = sorted((outcome.folder / series.derived_series_uid).glob("*.dcm"))
    assert len(files) == 11
    out = np.stack([pydicom.dcmread(f).pixel_array for f in files])
    ref = load_series(next(iter(scan(tmp_path / "in").studies.values())).series.popitem()[1])
    from pipeline.dicom.writer import stack_to_stored

    expected = np.stack(stack_to_stored(denoiser.denoise_hu(ref.hu, streamed.window), ref.hu, ref.datasets))
    np.testing.assert_array_equal(out, expected)
    assert qa_sample(11, 3) == [1, 4, 7, 10]
    rows = _csv(outcome.folder / "qa_slices.csv")
    assert sorted({int(r["slice_index"]) for r in rows}) == [1, 4, 7, 10]
    assert {int(r["slices"]) for r in _csv(outcome.folder / "qa_report.csv")} == {4}
    assert json.loads((outcome.folder / series.derived_series_uid / "provenance.json").read_text())["qa_slices"] == \
        [1, 4, 7, 10]


def test_qa_sample_and_qa_off(tmp_path, series_writer, tiny_model):
    from pipeline.study_run import qa_sample

    assert qa_sample(1, 8) == [0] and qa_sample(5, 8) == [2] and qa_sample(20, 8) == [4, 12] and qa_sample(9, 0) == []
    series_writer(tmp_path / "in", np.zeros((3, 16, 16), np.uint16))
    (outcome,) = process_scan(scan(tmp_path / "in"), tmp_path / "out", Settings(progress=False, qa_every=0),
                              Denoiser(tiny_model, "cpu"))
    assert outcome.series[0].slices == 3 and _csv(outcome.folder / "qa_report.csv") == []


def test_a_file_broken_late_in_a_streamed_series_leaves_nothing_of_it(tmp_path, series_writer, tiny_model):
    paths = series_writer(tmp_path / "in" / "a", np.ones((9, 16, 16), np.uint16), series="s1")
    series_writer(tmp_path / "in" / "b", np.ones((2, 16, 16), np.uint16), series="s2")
    paths[7].write_bytes(paths[7].read_bytes()[:-200])  # the third chunk of 3 slices fails to decode
    settings = Settings(progress=False, chunk_slices=3, prefetch_chunks=1)
    (outcome,) = process_scan(scan(tmp_path / "in"), tmp_path / "out", settings, Denoiser(tiny_model, "cpu"))
    assert [s.slices for s in outcome.series] == [2]
    (failed,) = [r for r in _csv(outcome.folder / "skipped.csv") if r["status"] == "failed"]
    assert failed["path"] == str(paths[7]) and "pixel data" in failed["reason"]
    assert len([p for p in outcome.folder.iterdir() if p.is_dir()]) == 1  # the first chunks were removed too


def test_qa_report_has_the_strength_and_what_the_derived_series_did_to_the_real_scan(tmp_path, series_writer,
                                                                                       tiny_model):
    """Series-level columns: the strength used, and noise in uniform soft tissue and the strong-edge
    gradient of the original slices and of the derived ones (no synthetic noise)."""
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:128, :128]
    body = np.where((yy - 64) ** 2 + (xx - 64) ** 2 < 55**2, 1064.0, 0.0)  # 40 HU disc in air (-1024)
    vol = np.stack([body + rng.normal(0, 15, body.shape) for _ in range(2)]).clip(0, 4000).astype(np.uint16)
    series_writer(tmp_path / "s", vol)
    settings = Settings(progress=False, qa_every=1, qa_panels=0, strength="low")
    (outcome,) = process_scan(scan(tmp_path / "s"), tmp_path / "out", settings, Denoiser(tiny_model, "cpu",
                                                                                         strength="low"))
    rows = _csv(study_output_folder(tmp_path / "out", outcome.study_uid) / "qa_report.csv")
    assert {r["strength"] for r in rows} == {"low (25 % of the estimated noise)"}
    row = rows[0]
    assert float(row["noise_estimate_hu"]) == pytest.approx(15.0, rel=0.1) and row["noise_confidence"] != "low"
    assert float(row["scan_noise_hu_original"]) == pytest.approx(15.0, rel=0.15)
    assert float(row["scan_noise_hu_denoised"]) > 0 and float(row["scan_edge_hu_per_mm_original"]) > 100
    (s,) = outcome.series
    assert s.scan is not None and float(row["scan_edge_hu_per_mm_denoised"]) == pytest.approx(s.scan.edge_after, abs=0.06)


def test_the_strength_names_the_derived_series_and_must_agree_with_the_denoiser(study, tmp_path, tiny_model):
    from pipeline.errors import ConfigError

    low = process_scan(scan(study), tmp_path / "low", Settings(progress=False, strength="low"),
                       Denoiser(tiny_model, "cpu", strength="low"))
    high = process_scan(scan(study), tmp_path / "high", Settings(progress=False, strength="high"),
                        Denoiser(tiny_model, "cpu", strength="high"))
    # other content, other derived UIDs: a PACS never sees two strengths under one series UID
    assert {s.derived_series_uid for s in low[0].series}.isdisjoint(s.derived_series_uid for s in high[0].series)
    files = sorted((low[0].folder / low[0].series[0].derived_series_uid).glob("*.dcm"))
    desc = pydicom.dcmread(files[0]).DerivationDescription
    assert "strength low (25 % of the estimated noise); series noise estimated " in desc
    with pytest.raises(ConfigError, match="strength 'high' in the settings, but the denoiser runs at 'low'"):
        process_scan(scan(study), tmp_path / "x", Settings(progress=False, strength="high"),
                     Denoiser(tiny_model, "cpu", strength="low"))


def test_an_unexpected_error_in_one_series_is_recorded_and_the_rest_goes_on(study, tmp_path, tiny_model, monkeypatch,
                                                                            caplog):
    from pipeline import study_run as study_mod

    real = study_mod._process_series
    broken = sorted(next(iter(scan(study).studies.values())).series)[0]

    def flaky(ref, *a, **k):
        if ref.series_uid == broken:
            raise OverflowError("Python integer 63536 out of bounds for int16")
        return real(ref, *a, **k)

    monkeypatch.setattr(study_mod, "_process_series", flaky)
    (outcome,) = process_scan(scan(study), tmp_path / "out", SETTINGS, Denoiser(tiny_model, "cpu"))
    assert [s.source_series_uid for s in outcome.series] != [] and broken not in {s.source_series_uid
                                                                                 for s in outcome.series}
    rows = _csv(outcome.folder / "skipped.csv")
    (row,) = [r for r in rows if r["status"] == "failed"]
    assert row["series_uid"] == broken
    assert row["reason"] == "unexpected OverflowError: Python integer 63536 out of bounds for int16"
    assert outcome.status == "partial" and (outcome.folder / "qa_report.csv").is_file()
    assert "not denoised" in caplog.text and "Traceback" not in caplog.text  # one line at error level


def test_a_study_whose_uids_are_hex_hashes_is_denoised_and_stays_in_its_study(tmp_path, series_writer, tiny_model,
                                                                             caplog):
    """Some anonymisers write hex hashes as UIDs: the study is denoised; folder names and the derived
    UIDs are valid UIDs derived from the hashes; the derived series keeps the source's Study UID."""
    paths = series_writer(tmp_path / "in", np.full((2, 16, 16), 1024, np.uint16))
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = "05fa52f0c3e94b0f8e1d7a3b9c2e4f60"
        ds.SeriesInstanceUID = "9b1c0e7d2a"
        ds.SOPInstanceUID = f"a1b2c3d4e5f6{k}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(path, enforce_file_format=True)
    (outcome,) = process_scan(scan(tmp_path / "in"), tmp_path / "out", SETTINGS, Denoiser(tiny_model, "cpu"))
    assert is_valid_uid(outcome.study_uid) and outcome.folder.name == outcome.study_uid
    (series,) = outcome.series
    files = sorted((outcome.folder / series.derived_series_uid).glob("*.dcm"))
    assert len(files) == 2 and is_valid_uid(series.derived_series_uid)
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.StudyInstanceUID == "05fa52f0c3e94b0f8e1d7a3b9c2e4f60"  # same study as the source
        assert is_valid_uid(ds.SeriesInstanceUID) and is_valid_uid(ds.SOPInstanceUID)
    prov = json.loads((outcome.folder / "provenance.json").read_text())
    assert prov["source_study_uid"] == "05fa52f0c3e94b0f8e1d7a3b9c2e4f60"
    assert caplog.text.count("is not a DICOM UID") == 2  # once per value (study, series), not per file


def test_slices_without_study_and_series_uids_are_denoised_as_one_series_with_a_stand_in(tmp_path, series_writer,
                                                                                      tiny_model):
    """Some converters write no Study or Series UID: the slices sharing a frame of reference form one
    series; the derived series carries the stand-in Study UID (Type 1), the same on every run."""
    paths = series_writer(tmp_path / "in", np.full((3, 16, 16), 1024, np.uint16))
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = "", ""
        ds.save_as(path, enforce_file_format=True)
    first = scan(tmp_path / "in")
    assert list(first.studies) == list(scan(tmp_path / "in").studies)  # the same stand-in every run
    (outcome,) = process_scan(first, tmp_path / "out", SETTINGS, Denoiser(tiny_model, "cpu"))
    (series,) = outcome.series
    assert series.slices == 3 and is_valid_uid(outcome.study_uid)
    for f in (outcome.folder / series.derived_series_uid).glob("*.dcm"):
        assert pydicom.dcmread(f).StudyInstanceUID == outcome.study_uid
    assert pydicom.dcmread(paths[0]).StudyInstanceUID == ""  # the source is never touched


def test_two_series_fourfold_apart_in_noise_get_their_own_estimates_and_levels(tmp_path, series_writer, caplog,
                                                                             tiny_conditioned_model):
    """A relative strength: each series is measured, the model is told each one's level, and the
    log, provenance, QA report and DerivationDescription say which."""
    caplog.set_level(logging.INFO)
    yy, xx = np.mgrid[:128, :128]
    body = np.where((yy - 64) ** 2 + (xx - 64) ** 2 < 58**2, 1064.0, 0.0)  # 40 HU disc in air (-1024)
    for name, std in (("quiet", 10.0), ("noisy", 40.0)):
        rng = np.random.default_rng(int(std))
        vol = np.stack([body + rng.normal(0, std, body.shape) for _ in range(3)]).clip(0, 4000).astype(np.uint16)
        series_writer(tmp_path / "in" / name, vol, series=name)
    settings = Settings(progress=False, qa_every=1, qa_panels=0, strength="full", noise_level_map="local")
    loaded = tiny_conditioned_model
    (outcome,) = process_scan(scan(tmp_path / "in"), tmp_path / "out", settings,
                              Denoiser.from_settings(loaded, settings))
    by_noise = sorted(outcome.series, key=lambda s: s.noise.sigma_hu)
    quiet, noisy = by_noise
    assert quiet.noise.sigma_hu == pytest.approx(10.0, rel=0.1) and noisy.noise.sigma_hu == pytest.approx(40.0, rel=0.1)
    assert quiet.noise.confidence == noisy.noise.confidence == "high"
    assert noisy.model_level_hu == pytest.approx(4 * quiet.model_level_hu, rel=0.15)
    folder = study_output_folder(tmp_path / "out", outcome.study_uid)
    rows = _csv(folder / "qa_report.csv")
    assert {r["method"] for r in rows} == set(METHODS)  # a noise-conditioned model also gets the told row
    for s in (quiet, noisy):
        mine = [r for r in rows if r["series_uid"] == s.source_series_uid]
        assert {r["noise_estimate_hu"] for r in mine} == {f"{s.noise.sigma_hu:.2f}"}
        assert {r["model_level_hu"] for r in mine} == {f"{s.model_level_hu:.2f}"}
        assert {r["strength"] for r in mine} == {"full (100 % of the estimated noise)"}
        qa_est = float(mine[0]["qa_noise_estimate_hu"])  # the QA copies carry 140 HU on top of the scan's own
        assert qa_est == pytest.approx(float(np.hypot(140.0, s.noise.sigma_hu)), rel=0.1)
        (f, *_) = sorted((folder / s.derived_series_uid).glob("*.dcm"))
        told = (f"series noise estimated {s.noise.sigma_hu:.1f} HU (high confidence), model told "
                f"{s.model_level_hu:.1f} HU shaped by each slice's local noise")
        assert told in pydicom.dcmread(f).DerivationDescription
        prov = json.loads((folder / s.derived_series_uid / "provenance.json").read_text())
        assert prov["noise_estimate"]["sigma_hu"] == pytest.approx(s.noise.sigma_hu, abs=0.01)
        assert prov["strength"] == {"setting": "full", "meaning": "full (100 % of the estimated noise)",
                                    "model_level_hu": pytest.approx(s.model_level_hu, abs=0.01),
                                    "share_of_correction": 1.0, "level_map": "local"}  # white noise: mapped
        assert f"series {s.source_series_uid}: noise {s.noise.sigma_hu:.1f} HU" in caplog.text
    # the same settings on another run name the derived series alike (the estimate is not in the UIDs)
    (again,) = process_scan(scan(tmp_path / "in"), tmp_path / "out2", settings, Denoiser.from_settings(loaded, settings))
    assert sorted(s.derived_series_uid for s in again.series) == sorted(s.derived_series_uid for s in outcome.series)
