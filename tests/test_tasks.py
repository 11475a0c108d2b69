"""The Luigi layer, with the shipped weights and luigi.cfg, on a real sample study."""
import csv
import os
import subprocess
import sys

import luigi
import numpy as np
import pytest
import SimpleITK as sitk
from luigi.execution_summary import LuigiStatusCode

import tasks
from pipeline.qa.series import METHODS
from tests.conftest import REPO, SAMPLES, sitk_series

FILTERS = ("gaussian", "average", "median", "bilateral")


def _build(task):
    return luigi.build([task], local_scheduler=True, detailed_summary=True, log_level="WARNING")



@pytest.fixture(scope="module")
def chest_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("luigi") / "out"
    task = tasks.DenoiseStudy(study_dir=str(SAMPLES / "chest"), output_dir=str(out))
    result = _build(task)
    return task, out, result


def test_settings_come_from_luigi_cfg():
    s = tasks.settings_from_config()
    assert (s.window.low, s.window.high, s.qa_sigma, s.device) == (-1000.0, 1000.0, 0.07, "auto")
    assert (s.qa_noise, s.qa_lowdose_i0) == ("gaussian", 20000.0)
    assert (s.batch_size, s.cpu_batch_size, s.strength.text) == (8, 1, "medium")  # parsed once, in Settings
    assert s.model_path == REPO / "models" / "weights" / "ct_denoiser.safetensors"
    assert s.series_description_suffix == " DENOISED" and s.filters.median_ksize == 5
    assert (s.noise_level_map, s.blotchy_pass) == ("series", "off")
    assert tasks.denoise.blotchy_pass._choices == {"mean", "off"}  # luigi refuses anything else
    from pipeline.qa.filters import FilterParams

    assert s.filters == FilterParams()  # luigi.cfg states the tuned defaults


def test_denoise_study_writes_series_reports_and_provenance(chest_run):
    task, out, result = chest_run
    assert result.status == LuigiStatusCode.SUCCESS
    (target,) = task.output().values()
    folder = target.path
    names = sorted(os.listdir(folder))
    assert {"qa_report.csv", "qa_slices.csv", "provenance.json", "skipped.csv"} <= set(names)
    series_dirs = [n for n in names if os.path.isdir(os.path.join(folder, n))]
    assert len(series_dirs) == 2
    with open(os.path.join(folder, "qa_report.csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * len(METHODS)  # the shipped model is noise-conditioned: it has the told row
    for series_uid in {r["series_uid"] for r in rows}:
        psnr = {r["method"]: float(r["mean_psnr_db"]) for r in rows if r["series_uid"] == series_uid}
        # as delivered (noise estimated from the copies, told nothing) within 0.5 dB of the model told the noise
        assert psnr["autoencoder"] > psnr["autoencoder_told"] - 0.5, psnr
        # the shipped model must beat every classical filter on the sample study at sigma 0.07
        assert psnr["autoencoder"] > max(psnr[f] for f in FILTERS), psnr
        assert min(psnr[f] for f in FILTERS) > psnr["noisy"]


def test_derived_series_geometry_matches_the_source_in_simpleitk(chest_run):
    task, out, _ = chest_run
    (target,) = task.output().values()
    sources = {str(sitk_series(SAMPLES / "chest" / d).GetOrigin()): sitk_series(SAMPLES / "chest" / d) for d in ("SE1", "SE2")}
    src = next(iter(sources.values()))
    for d in [p for p in os.scandir(target.path) if p.is_dir()]:
        img = sitk_series(d.path)
        assert img.GetSize() == src.GetSize() == (512, 512, 16)
        np.testing.assert_allclose(img.GetSpacing(), src.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(img.GetOrigin(), src.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(img.GetDirection(), src.GetDirection(), atol=1e-6)
        arr = sitk.GetArrayFromImage(img)
        assert arr.max() > 1000  # bone above the window is not clipped to 1000 HU
        assert arr.min() <= -1000


def test_second_run_with_outputs_present_does_no_work(chest_run, monkeypatch):
    task, out, _ = chest_run
    monkeypatch.setattr(tasks, "process_scan", lambda *a, **k: pytest.fail("ran again"))
    again = tasks.DenoiseStudy(study_dir=str(SAMPLES / "chest"), output_dir=str(out))
    assert again.complete()
    assert _build(again).status == LuigiStatusCode.SUCCESS


def test_ct_small_through_luigi(ct_small, tmp_path):
    task = tasks.DenoiseStudy(study_dir=str(ct_small), output_dir=str(tmp_path / "out"))
    assert _build(task).status == LuigiStatusCode.SUCCESS
    (target,) = task.output().values()
    assert os.path.exists(os.path.join(target.path, "qa_report.csv"))


def test_folder_without_ct_fails_with_nonzero_exit_code(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "note.txt").write_text("no images here")
    proc = subprocess.run(
        [sys.executable, "-m", "luigi", "--module", "tasks", "DenoiseStudy", "--study-dir", str(tmp_path / "in"),
         "--output-dir", str(tmp_path / "out"), "--local-scheduler"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 30, proc.stderr[-2000:]  # [retcode] task_failed in luigi.cfg
    assert "no CT image series found (1 file skipped: note.txt: " in proc.stderr  # each file with its reason
    assert not (tmp_path / "out").exists()


def test_train_model_task_writes_loadable_weights_and_card(tmp_path):
    from models.store import load_model

    task = tasks.TrainModel(run_dir=str(tmp_path / "run"), steps=4, batch_size=2, patch=32, width=4, levels=1,
                            pool_size=2)
    assert _build(task).status == LuigiStatusCode.SUCCESS
    loaded = load_model(task.output().path)
    assert loaded.card["training"]["steps"] == 4 and loaded.model.config["width"] == 4
    assert set(loaded.card["evaluation"]["phantoms"]["by_sigma"]) == {"0.02", "0.05", "0.07", "0.1"}
    assert "not clipped" in loaded.card["evaluation"]["yardstick"]


def test_train_model_task_takes_its_settings_from_a_config_file(tmp_path):
    import json

    from models.store import load_model

    cfg = {"steps": 3, "batch_size": 2, "patch": 32, "width": 4, "levels": 1, "convs_per_level": 1,
           "pool_size": 2, "val_slices": 1, "regions": "head,neck", "native_noise_max_hu": 20.0,
           "lowdose_fraction": 0.5}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    task = tasks.TrainModel(run_dir=str(tmp_path / "run"), config=str(tmp_path / "cfg.json"), seed=4)
    assert _build(task).status == LuigiStatusCode.SUCCESS
    card = load_model(task.output().path).card
    assert {k: card["training"]["config"][k] for k in cfg} == cfg and card["training"]["config"]["seed"] == 4
    assert "head, neck phantoms" in card["training"]["data"] and "20 HU" in card["training"]["data"]
    assert "low-dose CT noise" in card["training"]["noise"]
    assert card["training"]["command"] == (f"luigi --module tasks TrainModel --run-dir {tmp_path / 'run'} "
                                           f"--config {tmp_path / 'cfg.json'} --seed 4 --local-scheduler")


def test_gpu_resource_is_per_scheduler_or_per_host():
    assert tasks.gpu_resource_name("gpu", "ct01.example.org") == "gpu"
    assert tasks.gpu_resource_name("gpu_{host}", "ct01.example.org") == "gpu_ct01"
    assert tasks.gpu_resource_name("gpu_{host}", "weird host!") == "gpu_weird_host_"
    task = tasks.DenoiseStudy(study_dir="x", output_dir="y")
    assert task.resources == {"gpu": 1} and task.process_resources() == {"gpu": 1}
