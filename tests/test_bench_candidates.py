"""bench/candidates.py: candidates are scored as bench.quality scores the model told the std, and
each trains for the same time from the same start."""
import dataclasses

import pytest

from bench.candidates import CANDIDATES, Copies, candidate_config, score
from bench.quality import Cache, pydicom_slices, score_level
from models.training.config import TrainConfig
from pipeline.inference.denoiser import Denoiser


def test_a_candidate_is_scored_as_the_quality_bench_scores_the_model_told_the_std(tiny_conditioned_model):
    small = pydicom_slices()[0]
    ours = score(tiny_conditioned_model.model, Copies([small]), ("0.05", "lowdose@20000"))
    for level in ("0.05", "lowdose@20000"):
        bench = score_level(level, [small], 1, Denoiser(tiny_conditioned_model, "cpu"), {}, False, {}, Cache(None))
        assert ours[level] == pytest.approx(bench[small.name]["autoencoder_told"][0], abs=0.01), level


def test_candidates_change_only_their_own_settings_and_share_the_start():
    base = TrainConfig(source="realct", lowdose_fraction=0.25, blocks=4, loss="mse", steps=7000, lr=3e-4)
    cfg = candidate_config(base, CANDIDATES["b8-log_mse"], "start.safetensors", 321, 1e-4, 1e-5)
    assert (cfg.blocks, cfg.loss, cfg.steps, cfg.lr, cfg.lr_min) == (8, "log_mse", 321, 1e-4, 1e-5)
    assert cfg.init_weights == "start.safetensors"
    own = {"blocks", "loss", "steps", "lr", "lr_min", "init_weights"}
    same = {f.name for f in dataclasses.fields(TrainConfig)} - own
    assert {k: getattr(cfg, k) for k in same} == {k: getattr(base, k) for k in same}
