"""The nightly archive run: every study processed, summary and failures reported, exit codes."""
import csv
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, write_series

RNG = np.random.default_rng(5)


def _vol(n):
    return RNG.integers(900, 1200, (n, 32, 32)).astype(np.uint16)


def _luigi(archive, out):
    return subprocess.run(
        [sys.executable, "-m", "luigi", "--module", "tasks", "DenoiseArchive", "--archive-dir", str(archive),
         "--output-dir", str(out), "--local-scheduler", "--workers", "2", "--denoise-progress", "false"],
        cwd=REPO, capture_output=True, text=True, timeout=600)


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def archive(tmp_path):
    root = tmp_path / "archive"
    write_series(root / "patA" / "study1" / "se1", _vol(3), study="A", series="1")
    write_series(root / "patA" / "study1" / "se2", _vol(2), study="A", series="2")
    write_series(root / "patB" / "study2", _vol(4), study="B", series="1")
    (root / "DIRFILE").write_text("not dicom")
    return root


def test_clean_archive_exits_zero_and_reports_every_study(archive, tmp_path):
    import pydicom

    for path in write_series(archive / "patA" / "study1" / "mr", _vol(2), study="A", series="9"):
        ds = pydicom.dcmread(path)
        ds.Modality = "MR"  # not denoised: a skipped series, not a failure
        ds.save_as(path)
    out = tmp_path / "out"
    proc = _luigi(archive, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = {r["study_uid"]: r for r in _csv(out / "summary.csv")}
    assert len(summary) == 2
    assert sorted((r["status"], r["series_denoised"], r["series_skipped"], r["files_skipped"], r["slices"])
                  for r in summary.values()) == [("ok", "1", "0", "0", "4"), ("ok", "2", "1", "2", "5")]
    assert all(float(r["autoencoder_psnr_db"]) > 0 and r["best_filter"] for r in summary.values())
    # each denoised series' estimated noise, in HU, as its qa_report.csv has it
    assert sorted(len(r["noise_estimate_hu"].split("; ")) for r in summary.values()) == [1, 2]
    assert all(float(v) > 0 for r in summary.values() for v in r["noise_estimate_hu"].split("; "))
    assert _csv(out / "failures.csv") == []
    (dirfile,) = _csv(out / "skipped.csv")  # a file of no study is listed with its reason too
    assert dirfile["path"].endswith("DIRFILE") and dirfile["reason"].startswith("not a DICOM")
    page = (out / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    panels = sorted(str(p.relative_to(out)) for p in out.glob("*/qa_*.png"))
    assert len(panels) == 3 * 2 and sorted(set(images) - {"qa_gain.png"}) == panels  # 3 series: panel + psnr plot
    assert all((out / src).is_file() for src in images) and "http" not in page
    again = _luigi(archive, out)  # everything complete: nothing to do, still success
    assert again.returncode == 0
    assert "Did not run any tasks" in again.stderr


def test_a_broken_study_is_reported_and_fails_the_run_without_stopping_the_others(archive, tmp_path):
    bad = write_series(archive / "patC", _vol(2), study="C", series="1")
    bad[0].write_bytes(bad[0].read_bytes()[:-700])  # truncated pixel data: the only series fails
    partial = write_series(archive / "patA" / "study1" / "se3", _vol(2), study="A", series="3")
    partial[1].write_bytes(partial[1].read_bytes()[:-700])
    out = tmp_path / "out"
    proc = _luigi(archive, out)
    assert proc.returncode == 30, proc.stderr[-3000:]  # [retcode] task_failed
    summary = {r["status"]: r for r in _csv(out / "summary.csv")}
    assert sorted(summary) == ["failed", "ok", "partial"]
    assert summary["partial"]["series_denoised"] == "2" and summary["partial"]["series_failed"] == "1"
    failures = _csv(out / "failures.csv")
    assert {f["path"] for f in failures} == {str(bad[0]), str(partial[1])}
    assert all("pixel" in f["reason"] for f in failures)
    # the good study was denoised in the same run
    assert summary["ok"]["series_denoised"] == "1"
    # the next night: still failing inputs, still a non-zero exit, the failed study retried
    assert _luigi(archive, out).returncode == 30


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_on_luigid_denoise_every_series_exactly_once(archive, tmp_path):
    """Two luigi processes (as two hosts sharing a filesystem) against one real luigid."""
    import os
    import signal
    import time
    import urllib.request

    for k in range(3):
        write_series(archive / f"more{k}", _vol(2), study=f"M{k}", series="1")
    port = _free_port()
    luigid = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "luigid"), "--address", "127.0.0.1", "--port", str(port),
         "--state-path", str(tmp_path / "state.pickle"), "--logdir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(100):  # wait until the scheduler answers
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/task_list?data={{}}", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        out = tmp_path / "out"
        cmd = [sys.executable, "-m", "luigi", "--module", "tasks", "DenoiseArchive", "--archive-dir", str(archive),
               "--output-dir", str(out), "--scheduler-host", "127.0.0.1", "--scheduler-port", str(port),
               "--workers", "2", "--denoise-progress", "false"]
        # each "host" has its own lock folder (luigi refuses a second identical command per host)
        procs = [subprocess.Popen(cmd + ["--lock-pid-dir", str(tmp_path / f"lock{k}")], cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for k in range(2)]
        logs = [p.communicate(timeout=600)[0] for p in procs]
        codes = sorted(p.returncode for p in procs)
        # a process whose tasks were all taken by the other one saw no failure: it exits 0 too, so cron on
        # every host but one does not report a healthy night as an error ([retcode] in luigi.cfg)
        assert codes == [0, 0], "\n".join(log[-2000:] for log in logs)
        assert all("* 1 failed" not in log and "failed:" not in log for log in logs)
    finally:
        os.killpg(luigid.pid, signal.SIGTERM)
        luigid.wait(timeout=30)
    denoised = "".join(logs).count("slices -> ")  # one log line per series written
    summary = _csv(out / "summary.csv")
    assert len(summary) == 5 and {r["status"] for r in summary} == {"ok"}
    assert denoised == sum(int(r["series_denoised"]) for r in summary) == 6
    assert not [p for p in out.rglob(".*")]  # no temporaries left behind


def test_sigkill_mid_series_leaves_nothing_at_the_final_path_and_the_rerun_completes(tmp_path):
    """A real luigi process killed with SIGKILL while it writes a series."""
    import os
    import signal
    import time

    from tests.conftest import SAMPLES

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "luigi", "--module", "tasks", "DenoiseStudy", "--study-dir", str(SAMPLES / "abdomen"),
           "--output-dir", str(out), "--local-scheduler", "--denoise-progress", "false", "--denoise-batch-size", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob(".*.tmp-*/*/*.dcm")):
        time.sleep(0.05)  # wait until derived images are being written into the temporary folder
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    leftovers = list(out.glob(".*.tmp-*"))
    assert leftovers, "the run was not caught while writing"
    assert [p for p in out.iterdir() if not p.name.startswith(".")] == []  # nothing at a final path
    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    (study,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    (series,) = [p for p in study.iterdir() if p.is_dir()]
    assert len(list(series.glob("*.dcm"))) == 16 and (study / "qa_report.csv").exists()
    assert not list(out.glob(".*.tmp-*"))  # the killed run's temporary folder was cleaned up


@pytest.mark.skipif(not __import__("models.training.realct", fromlist=["available"]).available(),
                    reason="the real CT set (../shared/data/realct) is not here")
def test_the_real_ct_set_as_a_nightly_archive(tmp_path):
    """141 real slices of 20 scanner models (read-only): every axial slice is denoised, every file left
    out is listed with its reason, and the reports and the dashboard are written."""
    import json

    import pydicom

    from models.training import realct

    root = realct.resolve()
    out = tmp_path / "out"
    proc = _luigi(root, out)
    assert proc.returncode in (0, 30), proc.stderr[-3000:]
    assert (out / "summary.csv").is_file() and (out / "failures.csv").is_file() and (out / "index.html").is_file()
    summary = _csv(out / "summary.csv")
    assert summary and all(r["status"] != "missing" for r in summary)
    denoised = set()
    for prov in out.glob("*/*/provenance.json"):
        denoised.update(json.loads(prov.read_text())["source_images"])
    left_out = {r["path"]: r["reason"] for r in _csv(out / "failures.csv") + _csv(out / "skipped.csv")}
    for skipped in out.glob("*/skipped.csv"):
        left_out.update({r["path"]: r["reason"] for r in _csv(skipped)})
    for row in realct.manifest():
        path = root / row["file"]
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        cosines = [float(v) for v in row["orientation"].split("\\")] if row["orientation"] else []
        axial = len(cosines) == 6 and abs(np.cross(cosines[:3], cosines[3:])[2]) > 0.99
        if uid in denoised:
            continue
        assert str(path) in left_out and left_out[str(path)], f"{row['file']} neither denoised nor listed"
        # an axial slice is left out only when it is no CT image object at all (TotalSegmentator's example
        # files carry no SOP Class, Study or Series UID) or a duplicate position
        reason = left_out[str(path)]
        assert not axial or "is not a CT image class" in reason or "duplicate" in reason, f"{row['file']}: {reason}"
