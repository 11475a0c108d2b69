"""The nightly PACS run end to end against a real Orthanc (DICOMweb and DIMSE): what lands in the
PACS, reruns, a PACS that stops mid-run, refused credentials, a study that cannot be decoded."""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from bench.orthanc import Orthanc, available
from tests.conftest import REPO, write_series

pytestmark = pytest.mark.skipif(not available(), reason="Orthanc with the DICOMweb plugin is not installed "
                                                        "(bash .ci/install-dicom-tools)")
DATE = "20260101"  # StudyDate of tests.conftest.ct_dataset
PROTOCOLS = ["dicomweb", "dimse-get", "dimse-move"]
RNG = np.random.default_rng(13)


def _vol(n: int, size: int = 32) -> np.ndarray:
    return RNG.integers(900, 1200, (n, size, size)).astype(np.uint16)


def one_series_study(root: Path, name: str, slices: int, size: int = 32, **tags: str) -> tuple[str, list[Path]]:
    """A CT study ``name`` of one series of ``slices`` random slices, ``tags`` set on every file; its
    StudyInstanceUID and files."""
    paths = write_series(root / name, _vol(slices, size), study=name, series="1")
    if tags:
        for p in paths:
            ds = pydicom.dcmread(p)
            for k, v in tags.items():
                setattr(ds, k, v)
            ds.save_as(p, enforce_file_format=True)
    return str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID), paths


def _compress(paths: list[Path], syntax: str) -> None:
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.compress(syntax)
        ds.save_as(p, enforce_file_format=True)


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def sources(tmp_path) -> Path:
    """Two CT studies of DATE: A (a plain series, a JPEG 2000 one, an MR series not to be fetched),
    B (an RLE and a JPEG-LS series)."""
    root = tmp_path / "sources"
    write_series(root / "A" / "plain", _vol(3), study="A", series="1")
    _compress(write_series(root / "A" / "j2k", _vol(2), study="A", series="2"), JPEG2000Lossless)
    for p in write_series(root / "A" / "mr", _vol(2), study="A", series="3"):
        ds = pydicom.dcmread(p)
        ds.Modality = "MR"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        ds.save_as(p, enforce_file_format=True)
    _compress(write_series(root / "B" / "rle", _vol(2), study="B", series="1"), RLELossless)
    _compress(write_series(root / "B" / "jls", _vol(2), study="B", series="2"), JPEGLSLossless)
    return root


def _load(pacs: Orthanc, root: Path) -> None:
    pacs.upload(sorted(root.rglob("*.dcm")))


def pacs_args(pacs: Orthanc, protocol: str) -> list[str]:
    """Command-line settings of [pacs] for the test Orthanc, with short retries and timeouts."""
    return pacs.luigi_args(protocol, "TEST_PACS_PASSWORD") + [
        "--pacs-retries", "2", "--pacs-backoff-seconds", "0.2", "--pacs-connect-timeout", "3", "--pacs-timeout", "30"]


def run_pacs(pacs: Orthanc, protocol: str, out: Path, *extra: str, password: str | None = None,
             runner: list[str] | None = None, env: dict[str, str] | None = None,
             query: tuple[str, ...] = ("--study-date", DATE)) -> subprocess.CompletedProcess:
    """``DenoisePacs`` as cron runs it (``query``: which studies; ``extra``: more settings)."""
    cmd = (runner or [sys.executable, "-m", "luigi"]) + [
        "--module", "tasks", "DenoisePacs", *query, "--output-dir", str(out), "--local-scheduler",
        "--denoise-progress", "false", *pacs_args(pacs, protocol), *extra]
    environ = {**os.environ, "TEST_PACS_PASSWORD": password or pacs.password, **(env or {})}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=environ)


def derived_in_pacs(pacs: Orthanc) -> dict[str, list[dict]]:
    """Derived series in the PACS (SeriesDescription ends with DENOISED) -> their instances' tags."""
    series: dict[str, list[dict]] = {}
    for tags in pacs.instances():
        if tags.get("SeriesDescription", "").endswith("DENOISED"):
            series.setdefault(tags["SeriesInstanceUID"], []).append(tags)
    return series


def folder_mode(sources: Path, out: Path) -> dict[str, pydicom.Dataset]:
    """The same studies through the folder pipeline: derived SOPInstanceUID -> dataset."""
    proc = subprocess.run([sys.executable, "-m", "luigi", "--module", "tasks", "DenoiseStudy", "--study-dir",
                           str(sources), "--output-dir", str(out), "--local-scheduler", "--denoise-progress", "false"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, out.rglob("*.dcm"))}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_nightly_run_stores_verified_derived_series_like_the_folder_mode(pacs, sources, tmp_path, protocol):
    _load(pacs, sources)
    out = tmp_path / "out"
    proc = run_pacs(pacs, protocol, out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    derived = derived_in_pacs(pacs)
    expected = folder_mode(sources, tmp_path / "folder")
    # every instance of every derived series, with the folder mode's UIDs, geometry and pixels
    assert len(derived) == 4 and sum(map(len, derived.values())) == len(expected) == 9
    for series_uid, instances in derived.items():
        for tags in instances:
            ref = expected[tags["SOPInstanceUID"]]
            assert tags["SeriesInstanceUID"] == series_uid == ref.SeriesInstanceUID
            assert tags["StudyInstanceUID"] == ref.StudyInstanceUID
            got = pydicom.dcmread(__import__("io").BytesIO(pacs.file(series_uid, tags["SOPInstanceUID"])))
            assert [float(v) for v in got.ImagePositionPatient] == [float(v) for v in ref.ImagePositionPatient]
            np.testing.assert_array_equal(got.pixel_array, ref.pixel_array)
    summary = {r["study_uid"]: r for r in _csv(out / "summary.csv")}
    assert sorted((r["pacs_status"], r["status"], r["series_denoised"], r["verified_instances"],
                   r["instances_retrieved"]) for r in summary.values()) == [
        ("done", "ok", "2", "4", "4"), ("done", "ok", "2", "5", "5")]  # the MR series is not fetched
    assert all(float(r["retrieve_seconds"]) >= 0 and float(r["store_seconds"]) > 0 for r in summary.values())
    assert _csv(out / "failures.csv") == []
    (mr,) = _csv(out / "skipped.csv")
    assert "not retrieved" in mr["path"] and mr["reason"] == "modality MR is not CT"
    assert not (out / "work").exists() or not any((out / "work").iterdir())  # no patient data left behind
    assert sorted(p.name for p in out.glob("*/qa_report.csv")) == ["qa_report.csv"] * 2  # QA reports kept
    assert not list(out.rglob("*.dcm"))
    assert (out / "index.html").exists()
    assert pacs.password not in proc.stderr and pacs.password not in "".join(
        p.read_text() for p in out.rglob("*.json"))
    # the next night: every study recorded done, nothing sent, nothing new in the PACS
    count = pacs.get("/statistics")["CountInstances"]
    again = run_pacs(pacs, protocol, out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert pacs.get("/statistics")["CountInstances"] == count
    assert not re.search(r"study \S+: (retrieved|done;)", again.stderr)  # nothing fetched, nothing stored
    assert "2 studies: 0 done, 0 skipped, 0 failed, 2 done by an earlier run" in again.stderr


def test_wrong_credentials_give_one_clear_line_and_no_retries(pacs, sources, tmp_path):
    _load(pacs, sources)
    out = tmp_path / "out"
    started = time.monotonic()
    proc = run_pacs(pacs, "dicomweb", out, "--pacs-backoff-seconds", "5", password="wrong")
    assert proc.returncode == 30, proc.stderr[-3000:]
    assert time.monotonic() - started < 60  # no back-off: 2 retries would wait 5 + 10 s
    lines = [line for line in proc.stderr.splitlines() if "refused our credentials" in line]
    assert len(lines) == 1 and "HTTP 401" in lines[0] and "retrying" not in proc.stderr
    assert "wrong" not in lines[0]
    (failure,) = _csv(out / "failures.csv")
    assert "refused our credentials" in failure["reason"]
    assert derived_in_pacs(pacs) == {}


def test_unknown_ae_title_is_refused_without_retries(pacs, sources, tmp_path):
    _load(pacs, sources)
    out = tmp_path / "out"
    proc = run_pacs(pacs, "dimse-get", out, "--pacs-calling-aet", "STRANGER", "--pacs-backoff-seconds", "5")
    assert proc.returncode == 30, proc.stderr[-3000:]
    assert "retrying" not in proc.stderr
    (failure,) = _csv(out / "failures.csv")
    assert "AE title" in failure["reason"]


STOP_AFTER_FIRST_DENOISE = """
import os, signal, sys
import luigi, luigi.retcodes
import tasks
stopped = []
@tasks.DenoiseStudy.event_handler(luigi.Event.SUCCESS)
def stop_pacs(task):
    if not stopped:
        stopped.append(task)
        os.killpg(int(os.environ["ORTHANC_PID"]), signal.SIGTERM)
        import time
        for _ in range(100):
            try:
                os.kill(int(os.environ["ORTHANC_PID"]), 0)
                time.sleep(0.1)
            except OSError:
                break
sys.argv = ["luigi"] + sys.argv[1:]
luigi.retcodes.run_with_retcodes(sys.argv[1:])
"""


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse-get"])
def test_pacs_stopped_mid_run_fails_the_run_and_the_next_run_completes_without_duplicates(
        pacs, sources, tmp_path, protocol):
    _load(pacs, sources)
    out = tmp_path / "out"
    # the PACS stops right after the first study is denoised, before its derived series is stored
    runner = [sys.executable, "-c", STOP_AFTER_FIRST_DENOISE]
    proc = run_pacs(pacs, protocol, out, runner=runner, env={"ORTHANC_PID": str(pacs.proc.pid)})
    assert pacs.proc.poll() is not None, "the PACS should have been stopped"
    assert proc.returncode == 30, proc.stderr[-3000:]
    failures = _csv(out / "failures.csv")
    assert len(failures) == 2 and {f["path"] for f in failures} <= {"retrieve", "store"}
    assert "store" in {f["path"] for f in failures}
    assert all("gave up after 3 attempts" in f["reason"] for f in failures)
    pacs.proc = None
    pacs.start()  # the same storage: whatever was stored before the stop is still there
    again = run_pacs(pacs, protocol, out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "retrieved by an earlier run, reused" in again.stderr  # the failed study's work folder
    derived = derived_in_pacs(pacs)
    assert sorted(map(len, derived.values())) == [2, 2, 2, 3]  # each derived instance once
    assert {r["pacs_status"] for r in _csv(out / "summary.csv")} == {"done"}
    assert _csv(out / "failures.csv") == []


def test_a_study_that_cannot_be_decoded_is_listed_and_the_others_complete(pacs, sources, tmp_path):
    bad = write_series(sources / "C", _vol(2), study="C", series="1")
    _compress(bad, JPEG2000Lossless)
    for p in bad:  # a JPEG 2000 codestream that is not one
        ds = pydicom.dcmread(p)
        frame = pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1).__next__()
        ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f" + bytes(len(frame) - 2)])
        ds.save_as(p, enforce_file_format=True)
    _load(pacs, sources)
    out = tmp_path / "out"
    proc = run_pacs(pacs, "dicomweb", out)
    assert proc.returncode == 30, proc.stderr[-3000:]
    summary = {r["study_uid"]: r for r in _csv(out / "summary.csv")}
    study_c = str(pydicom.dcmread(bad[0]).StudyInstanceUID)
    assert summary[study_c]["pacs_status"] == "failed" and summary[study_c]["stage"] == "denoise"
    assert sorted(r["pacs_status"] for r in summary.values()) == ["done", "done", "failed"]
    reasons = [f["reason"] for f in _csv(out / "failures.csv") if f["study_uid"] == study_c]
    assert reasons and any("pixel" in r.lower() or "decod" in r.lower() for r in reasons)
    assert len(derived_in_pacs(pacs)) == 4
    assert (out / "work" / study_c).is_dir()  # kept to look at ([pacs] keep_work = on_failure)


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse-get"])
def test_a_half_stored_series_is_completed_and_nothing_is_sent_twice(pacs, tmp_path, protocol):
    from pipeline.pacs.config import PacsConfig
    from pipeline.pacs.connect import connect
    from pipeline.pacs.nightly import store_study

    study = tmp_path / "study"
    files = write_series(study / "derived", _vol(4), study="H", series="d1")
    if protocol == "dicomweb":
        config = PacsConfig(url=pacs.dicomweb_url, username=pacs.user, password=pacs.password, retries=0)
    else:
        config = PacsConfig(protocol="dimse", host="127.0.0.1", port=pacs.dicom_port, called_aet=pacs.aet,
                            calling_aet=pacs.our_aet, retries=0)
    with connect(config) as client:
        client.store(files[:2])  # an earlier run stopped half-way
        changes = len(pacs.get("/changes?limit=1000")["Changes"])
        assert store_study(client, config, study)[:2] == (2, 4)  # the two missing ones sent, all four verified
        assert len(pacs.get("/changes?limit=1000")["Changes"]) - changes >= 2
        assert store_study(client, config, study)[:2] == (0, 4)  # complete: nothing sent
    assert pacs.get("/statistics")["CountInstances"] == 4
