"""The PACS run on demand and with several workers, against a real Orthanc: studies asked for by
StudyInstanceUID or accession number (one without a StudyDate among them), done ones skipped unless
--redo, a redo with another strength adding a new derived series, --workers 2 over DICOMweb and
C-MOVE, and what the night's log and metrics say."""
from __future__ import annotations

import re

import pytest

from bench.orthanc import available
from tests.test_pacs import _csv, _load, derived_in_pacs, one_series_study, run_pacs

pytestmark = pytest.mark.skipif(not available(), reason="Orthanc with the DICOMweb plugin is not installed "
                                                        "(bash .ci/install-dicom-tools)")


def test_studies_on_demand_by_uid_and_accession_number_skipped_when_done_and_redone_on_request(pacs, tmp_path):
    root = tmp_path / "sources"
    undated = one_series_study(root, "G", 2, StudyDate="", StudyTime="")[0]  # no StudyDate: no date query finds it
    dated = one_series_study(root, "A", 3)[0]
    ordered = one_series_study(root, "C", 2, AccessionNumber="ACC0042", StudyDate="20250505")[0]
    _load(pacs, root)
    out = tmp_path / "out"

    first = run_pacs(pacs, "dicomweb", out, query=("--study-uid", undated))
    assert first.returncode == 0, first.stderr[-3000:]
    assert [r["study_uid"] for r in _csv(out / "summary.csv")] == [undated]
    assert sorted(map(len, derived_in_pacs(pacs).values())) == [2]
    line = re.search(rf"study {undated}: done; retrieve [\d.]+ s, denoise [\d.]+ s, store [\d.]+ s; "
                     r"instances retrieved 2, stored 2, verified 2", first.stderr)
    assert line, first.stderr[-3000:]
    assert "PACS run (1 study UID(s) asked for): 1 studies: 1 done, 0 skipped, 0 failed, 0 done by an earlier run" \
        in first.stderr
    metrics = (out / "metrics.prom").read_text()
    assert 'ct_denoise_pacs_studies{outcome="done"} 1' in metrics and "ct_denoise_pacs_instances_stored 2" in metrics
    assert "ACC0042" not in first.stderr and "FAKE-TEST" not in first.stderr and "PHANTOM" not in first.stderr

    both = run_pacs(pacs, "dicomweb", out, query=("--study-uid", f"{undated}, {dated}"))  # a space after the comma
    assert both.returncode == 0, both.stderr[-3000:]
    assert f"study {undated}: retrieved" not in both.stderr  # done: not fetched again
    assert "2 studies: 1 done, 0 skipped, 0 failed, 1 done by an earlier run" in both.stderr
    assert {r["study_uid"]: r["pacs_status"] for r in _csv(out / "summary.csv")} == {undated: "done", dated: "done"}

    by_accession = run_pacs(pacs, "dicomweb", out, query=("--accession-number", "ACC0042"))
    assert by_accession.returncode == 0, by_accession.stderr[-3000:]
    assert [r["study_uid"] for r in _csv(out / "summary.csv")] == [ordered]
    assert "ACC0042" not in by_accession.stderr  # the accession number stays out of the log
    assert sorted(map(len, derived_in_pacs(pacs).values())) == [2, 2, 3]

    unknown = "1.2.826.0.1.3680043.8.498.1"
    missing = run_pacs(pacs, "dicomweb", out, query=("--study-uid", f"{unknown},{dated}"))
    assert missing.returncode == 30, missing.stderr[-3000:]
    (failure,) = _csv(out / "failures.csv")
    assert failure["study_uid"] == unknown and "no CT study with this StudyInstanceUID" in failure["reason"]
    nobody = run_pacs(pacs, "dicomweb", out, query=("--accession-number", "NOSUCH1"))
    assert nobody.returncode == 30 and "no CT study with accession number NOSUCH1" in _csv(out / "failures.csv")[0][
        "reason"]

    same = run_pacs(pacs, "dicomweb", out, "--redo", query=("--study-uid", undated))  # same model, same strength
    assert same.returncode == 0, same.stderr[-3000:]
    assert re.search(rf"study {undated}: done; .*instances retrieved 2, stored 0, verified 2", same.stderr)
    assert sorted(map(len, derived_in_pacs(pacs).values())) == [2, 2, 3]  # the same derived UIDs: nothing new
    series_before = {uid for uid, tags in derived_in_pacs(pacs).items() if tags[0]["StudyInstanceUID"] == undated}

    stronger = run_pacs(pacs, "dicomweb", out, "--redo", "--denoise-strength", "full", query=("--study-uid", undated))
    assert stronger.returncode == 0, stronger.stderr[-3000:]
    derived = derived_in_pacs(pacs)
    of_g = {uid: tags for uid, tags in derived.items() if tags[0]["StudyInstanceUID"] == undated}
    assert series_before < set(of_g) and len(of_g) == 2 and all(len(t) == 2 for t in of_g.values())  # added, kept
    (row,) = _csv(out / "summary.csv")
    assert row["pacs_status"] == "done" and row["instances_stored"] == "2"


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse-move"])
def test_two_workers_process_each_study_once_with_one_denoising_at_a_time(pacs, tmp_path, protocol):
    root = tmp_path / "sources"
    uids = [one_series_study(root, name, 3)[0] for name in "PQRS"]
    _load(pacs, root)
    out = tmp_path / "out"
    proc = run_pacs(pacs, protocol, out, "--workers", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    derived = derived_in_pacs(pacs)
    assert sorted(map(len, derived.values())) == [3, 3, 3, 3]
    assert sorted(t[0]["StudyInstanceUID"] for t in derived.values()) == sorted(uids)  # each study once
    rows = _csv(out / "summary.csv")
    assert sorted(r["study_uid"] for r in rows) == sorted(uids)
    assert all(r["pacs_status"] == "done" and r["instances_stored"] == r["verified_instances"] == "3" for r in rows)
    # [resources] gpu = 1: one DenoiseStudy at a time, whatever the workers do meanwhile
    running = 0
    for line in proc.stderr.splitlines():
        if re.search(r"\] Worker Worker\(.*\) running\s+DenoiseStudy\(", line):
            running += 1
            assert running == 1, "two DenoiseStudy tasks ran at once"
        elif re.search(r"\] Worker Worker\(.*\) (done|failed)\s+DenoiseStudy\(", line):
            running -= 1
    pids = set(re.findall(r"\[pid (\d+)\] Worker Worker\(.*\) running\s+PacsStudy", proc.stderr))
    assert len(pids) >= 2  # the studies ran in worker processes of their own
    assert f"{len(uids)} studies: {len(uids)} done" in proc.stderr


def test_the_workers_benchmark_runs_every_worker_count_on_the_same_studies(capsys):
    from bench.pacs import main

    runs = main(["--workers", "1", "2", "--studies", "2", "--slices", "2", "--protocols", "dicomweb"])
    table = capsys.readouterr().out
    assert set(runs) == {"dicomweb 1", "dicomweb 2"}
    assert all(r["wall"] > r["denoise"] > 0 and r["retrieve"] > 0 and r["store"] > 0 for r in runs.values())
    assert "| dicomweb | 1 |" in table and "| dicomweb | 2 |" in table and "+0.0% |" in table
