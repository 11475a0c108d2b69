"""What a night against a real Orthanc survives: the work folder's file system filling up during
retrieve and during write, a corrupt instance in the PACS, a PACS that stops answering (read
timeout), and the run killed with SIGKILL while storing. In each case the other studies go on, the
study is recorded failed with a one-line reason, the reports are written, and the next run completes
with nothing stored twice."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless

from bench.orthanc import available
from tests.conftest import REPO
from tests.proxy import tcp_proxy
from tests.test_pacs import DATE, _compress, _csv, _load, derived_in_pacs, one_series_study, pacs_args, run_pacs

pytestmark = pytest.mark.skipif(not available(), reason="Orthanc with the DICOMweb plugin is not installed "
                                                        "(bash .ci/install-dicom-tools)")


def _status(out: Path) -> dict[str, tuple[str, str]]:
    return {r["study_uid"]: (r["pacs_status"], r["stage"]) for r in _csv(out / "summary.csv")}


def _reasons(out: Path) -> dict[str, str]:
    rows = _csv(out / "failures.csv")
    assert all("\n" not in r["reason"] for r in rows)
    return {r["study_uid"]: r["reason"] for r in rows}


@contextmanager
def small_filesystem(path: Path, size_kb: int) -> Iterator[Path]:
    """A tmpfs of ``size_kb`` KiB mounted on ``path`` (root only, as the CI machine runs the tests)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small file system here (root needed): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse-get"])
def test_a_full_work_disk_during_retrieve_and_during_write(pacs, tmp_path, protocol):
    """Work folders on a 4 MiB file system: S (2 slices of 128x128, 66 kB in, 1.5 MB out with its QA
    panel) fits; W (24 slices, 0.8 MB) is retrieved but its derived series and QA panels do not fit
    beside it; L (160 slices, 5.2 MB) does not fit while it is retrieved."""
    root = tmp_path / "sources"
    small, _ = one_series_study(root, "S", 2, 128)
    write, _ = one_series_study(root, "W", 24, 128)
    large, _ = one_series_study(root, "L", 160, 128)
    _load(pacs, root)
    out = tmp_path / "out"
    with small_filesystem(tmp_path / "work", 4096) as work:
        proc = run_pacs(pacs, protocol, out, "--pacs-work-dir", str(work))
        left = sorted(p.relative_to(work) for p in work.rglob("*"))
    assert proc.returncode == 30, proc.stderr[-3000:]
    assert _status(out) == {small: ("done", ""), write: ("failed", "denoise"), large: ("failed", "retrieve")}
    reasons = _reasons(out)
    for uid in (write, large):
        assert "no space left on the work folder's file system" in reasons[uid], reasons[uid]
    assert left == []  # a study that filled the disk leaves nothing behind, whatever keep_work says
    assert sorted(map(len, derived_in_pacs(pacs).values())) == [2]

    again = run_pacs(pacs, protocol, out, "--pacs-work-dir", str(tmp_path / "roomy"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert {s for s, _ in _status(out).values()} == {"done"}
    assert f"study {small}: retrieved" not in again.stderr  # done the first night
    assert sorted(map(len, derived_in_pacs(pacs).values())) == [2, 24, 160]  # each derived instance once


def test_a_corrupt_instance_fails_its_study_with_the_file_named_and_the_others_go_on(pacs, tmp_path):
    root = tmp_path / "sources"
    good, _ = one_series_study(root, "A", 3)
    bad, paths = one_series_study(root, "K", 4)
    _compress(paths, JPEG2000Lossless)
    ds = pydicom.dcmread(paths[2])  # one instance whose JPEG 2000 codestream is not one
    frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f" + bytes(len(frame) - 2)])
    ds.save_as(paths[2], enforce_file_format=True)
    _load(pacs, root)
    out = tmp_path / "out"
    for night in (1, 2):  # the instance stays corrupt: the study fails again, the good one is not redone
        proc = run_pacs(pacs, "dicomweb", out)
        assert proc.returncode == 30, proc.stderr[-3000:]
        assert _status(out) == {good: ("done", ""), bad: ("failed", "denoise")}
        reason = _reasons(out)[bad]
        assert ds.SOPInstanceUID in reason or "slice" in reason.lower(), reason
        assert "decod" in reason.lower() or "pixel" in reason.lower(), reason
        assert sorted(map(len, derived_in_pacs(pacs).values())) == [3]  # nothing of K stored, A once
        assert (night == 2) == (f"study {good}: retrieved" not in proc.stderr)


def _held_wado(series_uid: str):
    return lambda chunk: chunk.startswith(b"GET ") and f"/series/{series_uid} HTTP".encode() in chunk


def test_a_pacs_that_stops_answering_is_a_read_timeout_and_the_next_run_fetches_the_study(pacs, tmp_path):
    root = tmp_path / "sources"
    good, _ = one_series_study(root, "A", 3)
    slow, paths = one_series_study(root, "T", 2)
    slow_series = str(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID)
    _load(pacs, root)
    out = tmp_path / "out"
    with tcp_proxy(pacs.http_port, hold=_held_wado(slow_series)) as port:
        t = time.monotonic()
        proc = run_pacs(pacs, "dicomweb", out, "--pacs-url", f"http://127.0.0.1:{port}/dicom-web",
                        "--pacs-timeout", "2", "--pacs-retries", "1")
        assert time.monotonic() - t < 300
    assert proc.returncode == 30, proc.stderr[-3000:]
    assert _status(out) == {good: ("done", ""), slow: ("failed", "retrieve")}
    reason = _reasons(out)[slow]
    assert "no answer within the timeout" in reason and "gave up after 2 attempts" in reason, reason
    again = run_pacs(pacs, "dicomweb", out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {s for s, _ in _status(out).values()} == {"done"}
    assert sorted(map(len, derived_in_pacs(pacs).values())) == [2, 3]


def test_a_run_killed_during_store_is_completed_by_the_next_run_without_duplicates(pacs, tmp_path):
    root = tmp_path / "sources"
    uid, _ = one_series_study(root, "B", 6)
    _load(pacs, root)
    out = tmp_path / "out"
    posts, held = [], threading.Event()

    def third_store(chunk: bytes) -> bool:  # STOW-RS one instance per request: hold the third
        if chunk.startswith(b"POST "):
            posts.append(chunk)
            if len(posts) == 3:
                held.set()
                return True
        return False

    with tcp_proxy(pacs.http_port, hold=third_store) as port:
        cmd = [sys.executable, "-m", "luigi", "--module", "tasks", "DenoisePacs", "--study-date", DATE,
               "--output-dir", str(out), "--local-scheduler", "--denoise-progress", "false",
               *pacs_args(pacs, "dicomweb"), "--pacs-url", f"http://127.0.0.1:{port}/dicom-web",
               "--pacs-store-batch", "1"]
        proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "TEST_PACS_PASSWORD": pacs.password},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            assert held.wait(300), "the run never reached its third store request"
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            stderr = proc.communicate(timeout=30)[1].decode()
    assert proc.returncode == -signal.SIGKILL, stderr[-3000:]
    assert sorted(map(len, derived_in_pacs(pacs).values())) == [2]  # two instances landed before the kill
    assert not (out / "summary.csv").exists()  # no report from the killed run

    again = run_pacs(pacs, "dicomweb", out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "retrieved by an earlier run, reused" in again.stderr
    (row,) = _csv(out / "summary.csv")
    assert (row["pacs_status"], row["instances_stored"], row["verified_instances"]) == ("done", "4", "6")
    assert sorted(map(len, derived_in_pacs(pacs).values())) == [6]  # each derived instance once
