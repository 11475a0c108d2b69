"""Training on a machine without the data sets: the training parts packed (models/training/pack.py)
and a time-boxed run over them (models/training/offline_run.sh), on miniature sets written here."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from models.training import pack, volumes
from models.training.config import TrainConfig
from models.training.data import PatchStream
from tests.test_realct import _fake_set
from tests.test_volumes import volume_set  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def packed(volume_set, tmp_path, monkeypatch):  # noqa: F811
    """The miniature sets (5 series: 3 train, then 1 validation, 1 test) and their packed training parts."""
    monkeypatch.setattr(volumes, "SPLIT_SIZES", {"train": 3, "validation": 1, "test": 1})
    real = _fake_set(tmp_path / "realct")
    counts = pack.pack(tmp_path / "packed", real, volume_set)
    return real, volume_set, tmp_path / "packed", counts


def test_packing_copies_the_training_parts_alone_and_they_give_the_same_batches(packed):
    real, vols, dest, counts = packed
    assert counts["realct"][0] == 1 and counts["realct_volumes"][0] == 12  # 1 training slice; 3 series x 4
    assert [p.name for p in sorted((dest / "realct").iterdir())] == ["lidc_concept_to_clinic", "manifest.csv"]
    assert sorted(p.name for p in (dest / "realct_volumes").iterdir()) == ["manifest.csv", "sts_000", "sts_001",
                                                                          "sts_002"]
    assert volumes.split(dest / "realct_volumes")["train"] == volumes.split(vols)["train"]
    settings = dict(context=1, source="realct", volume_fraction=0.5, patch=32, batch_size=8, sigma_max=0.05)
    whole = PatchStream(TrainConfig(realct_dir=str(real), volumes_dir=str(vols), **settings)).batch(3)
    there = PatchStream(TrainConfig(realct_dir=str(dest / "realct"), volumes_dir=str(dest / "realct_volumes"),
                                    **settings)).batch(3)
    for a, b in zip(whole, there):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_packing_refuses_a_set_whose_training_series_do_not_come_first(volume_set, tmp_path):  # noqa: F811
    # the fixture's own split: 2 train, 1 validation, 1 test, and the fifth series to train again
    with pytest.raises(ValueError, match="a training series sorts after a held-out one"):
        pack.pack(tmp_path / "packed", _fake_set(tmp_path / "realct"), volume_set)
    only_held_out = _fake_set(tmp_path / "held_out", groups=("fo_dicom", "orthanc_tests"))
    with pytest.raises(ValueError, match=f"^{only_held_out}: no training files in its manifest$"):
        pack.pack(tmp_path / "packed_2", only_held_out, volume_set)


def _run(args, **env):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DEVICE": "cpu",
           "WORKERS": "0", "RATE_SECONDS": "1", **env}
    return subprocess.run(["bash", "models/training/offline_run.sh", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_offline_run_sizes_its_steps_by_the_measured_rate_and_trains_on_the_packed_sets(packed, tmp_path):
    _, _, dest, _ = packed
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(dict(context=1, source="realct", volume_fraction=0.5, patch=32, batch_size=2,
                                      width=4, levels=1, convs_per_level=1, noise_map=True, steps=5,
                                      checkpoint_every=1000, seed=3)))
    run = tmp_path / "run"
    done = _run([config, run, 0.05, dest])
    assert done.returncode == 0, done.stderr[-2000:]
    m = re.search(r"([\d.]+) steps/s on cpu with 0 batch workers: (\d+) steps in 0.05 min", done.stdout)
    assert m, done.stdout
    steps = int(m.group(2))
    assert steps == max(1, int(float(m.group(1)) * 60 * 0.05 * 0.93))
    saved = json.loads((run / "config.json").read_text())
    assert saved["steps"] == steps and saved["realct_dir"] == str((dest / "realct").resolve())
    assert saved["volumes_dir"] == str((dest / "realct_volumes").resolve())
    with safe_open(str(run / "checkpoint.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["meta"])["step"] == steps
    again = _run([config, run, 0.05, dest])  # a rerun resumes (here: finds the run complete)
    assert again.returncode == 0 and f"resuming {run} (steps {steps})" in again.stdout


def test_the_offline_run_names_missing_packed_data(tmp_path):
    done = _run([REPO / "models/configs/ct_denoiser_context_gpu_3.json", tmp_path / "run", 1, tmp_path / "none"])
    assert done.returncode == 2
    assert done.stderr.strip() == (f"{tmp_path}/none/realct/manifest.csv: not there "
                                   f"(run python -m models.training.pack {tmp_path}/none)")
    assert not (tmp_path / "run").exists()
