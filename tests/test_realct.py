"""The real CT set: split by source, read where it lies, used for training and validation."""
import csv

import numpy as np
import pytest

from models.training import realct
from models.training.config import TrainConfig
from models.training.data import PatchStream, validation_set
from models.training.train import train
from tests.conftest import write_series

FIELDS = ["file", "group", "source", "terms", "origin_path", "rows", "cols", "pixel_mm", "thickness_mm",
          "manufacturer", "model", "kernel", "orientation"]


def _fake_set(root, groups=("lidc_concept_to_clinic", "fo_dicom", "orthanc_tests")):
    """A miniature set in the real one's layout: one 64x64 slice per group, air written as -1024."""
    rows = []
    for k, group in enumerate(groups):
        img = np.full((1, 64, 64), 0, np.int16)  # stored 0 -> -1024 HU
        img[0, 16:48, 16:48] = 1064 + 10 * k  # 40 HU + 10 k
        (path,) = write_series(root / group, img, names=[f"{group}_000.dcm"], series=group, study=group,
                               spacing=0.5 + 0.1 * k)
        rows.append({"file": f"{group}/{path.name}", "group": group, "source": f"src {group}",
                     "terms": "CC BY 4.0", "origin_path": "x", "rows": 64, "cols": 64, "pixel_mm": 0.5 + 0.1 * k,
                     "thickness_mm": 1, "manufacturer": "ACME", "model": f"M{k}",
                     "kernel": ("BONE", "['I70f', '3']", "")[k % 3], "orientation": ""})
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, FIELDS)
        w.writeheader()
        w.writerows(rows)
    return root


def test_the_split_is_by_source_and_the_parts_are_disjoint():
    parts = [set(v) for v in realct.SPLIT.values()]
    assert sum(len(p) for p in parts) == len(set().union(*parts))


def test_parts_are_read_from_the_set_with_their_pixel_size_and_air_below_the_window(tmp_path):
    root = _fake_set(tmp_path / "set")
    train_part = realct.load_part("train", root)
    assert [s.group for s in train_part] == ["lidc_concept_to_clinic"]
    (val,) = realct.load_part("validation", root)
    assert val.pixel_mm == pytest.approx(0.6) and val.scanner == "ACME M1"
    assert val.kernel == "I70f" and train_part[0].kernel == "BONE"  # a multi-valued kernel: its first value
    assert realct.load_part("test", root)[0].kernel == ""
    assert val.hu.min() == -1024.0 and val.hu.max() == pytest.approx(50.0)  # as stored, not clipped
    assert realct.load_part("test", root, min_side=65) == []
    (att,) = realct.attribution("train", root)
    assert att == {"group": "lidc_concept_to_clinic", "source": "src lidc_concept_to_clinic", "terms": "CC BY 4.0",
                   "scanners": ["ACME M0"], "slices": 1}
    with pytest.raises(ValueError, match="part must be one of"):
        realct.load_part("everything", root)
    with pytest.raises(FileNotFoundError, match="real CT set is not there"):
        realct.manifest(tmp_path / "nowhere")


def test_training_on_the_set_uses_its_training_part_and_validates_on_its_validation_part(tmp_path):
    root = _fake_set(tmp_path / "set")
    cfg = TrainConfig(steps=4, checkpoint_every=2, val_every=2, batch_size=2, patch=32, width=4, levels=1,
                      convs_per_level=1, noise_map=True, source="realct", realct_dir=str(root), lr=1e-3,
                      sigma_min=0.05)
    stream = PatchStream(cfg)
    noisy, clean, level = stream.batch(0)
    assert [r.name for r in stream._fixed_pool()] == ["lidc_concept_to_clinic/lidc_concept_to_clinic_000.dcm"]
    assert clean.min() >= 0 and (clean == 0).any()  # the target is clipped to the window (air at -1024)
    noise = noisy - clean
    assert float(level.min()) >= 0.05 and float(level.max()) <= cfg.sigma_max
    # air at -1024 HU gets zero-mean noise before the input window clips it: a bit under half survives
    in_air = clean == 0
    assert 0.3 < float((noise[in_air] > 0).float().mean()) < 0.5
    assert [r.name for r in validation_set(cfg)] == ["fo_dicom/fo_dicom_000.dcm"]
    train(cfg, tmp_path / "run", progress=False)
    rows = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    assert len(rows) == 3 and float(rows[-1].split(",")[2]) > 10  # validated on the validation part


@pytest.mark.skipif(not realct.available(), reason="the real CT set (../shared/data/realct) is not here")
def test_every_source_of_the_real_set_is_in_exactly_one_part():
    groups = {row["group"] for row in realct.manifest()}
    assert groups == set().union(*map(set, realct.SPLIT.values()))
    test_scanners = {s.scanner for s in realct.load_part("test")}
    train_scanners = {s.scanner for s in realct.load_part("train")}
    assert len(test_scanners) >= 5 and not test_scanners & train_scanners


def test_the_strength_bench_runs_the_shipped_context_model_on_one_slice_series(tmp_path, capsys):
    from bench.strength import derived_slice, main
    from models.store import load_model
    from pipeline.inference.denoiser import Denoiser
    from pipeline.inference.noise_level import estimate_series
    from pipeline.inference.window import Window

    root = _fake_set(tmp_path)
    (sl,) = realct.load_part("test", str(root))
    hu = sl.hu + np.random.default_rng(0).normal(0, 30, sl.hu.shape).astype(np.float32)
    loaded = load_model()
    assert loaded.model.context == 2  # the shipped model takes neighbours, which a lone slice lacks
    den = Denoiser(loaded, "cpu", strength="medium")
    noise = estimate_series([hu])
    out = derived_slice(den, hu, noise)
    alone = den.denoise_hu(np.repeat(hu[None], 3, 0), Window(), noise, links=np.zeros(2, bool))[1]
    np.testing.assert_allclose(out, alone, atol=1e-4)  # its own neighbours: as any slice cut off from its stack
    assert np.abs(out - hu).max() > 1  # it did denoise
    main(["--parts", "test", "--realct-dir", str(root), "--strengths", "medium"])
    table = capsys.readouterr().out
    assert f"# model {loaded.name};" in table and "| test | orthanc_tests (1) |" in table
