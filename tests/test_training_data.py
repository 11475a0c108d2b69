"""Training data of the denoiser: references that look like scans, and the noise added to them."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from models.training.config import TrainConfig, load_config
from models.training.data import PatchStream, reference_slice
from pipeline.inference.window import Window
from pipeline.synthetic.phantom import ALL_REGIONS
from pipeline.synthetic.references import clean_slice

W = Window()
TINY_POOL = dict(batch_size=32, patch=48, pool_size=3, pool_refresh=1000)


def _hu(unit: np.ndarray) -> np.ndarray:
    return unit.astype(np.float64) * W.width + W.low


def test_realistic_references_carry_their_own_noise_at_a_drawn_level():
    levels = []
    for seed in range(200, 216):
        plain = _hu(clean_slice(seed, W, ALL_REGIONS))
        noisy = _hu(clean_slice(seed, W, ALL_REGIONS, native_noise_max_hu=30.0))
        body = (plain > -900) & (plain < 900)  # away from the window's clipping edges
        levels.append(float((noisy - plain)[body].std()))
    assert max(levels) <= 30.5 and min(levels) < 10 < 20 < max(levels)  # std uniform in [0, 30] HU
    assert float(np.mean(levels)) == pytest.approx(15.0, abs=5.0)
    np.testing.assert_array_equal(reference_slice(5, TrainConfig(native_noise_max_hu=30.0)),
                                  reference_slice(5, TrainConfig(native_noise_max_hu=30.0)))  # seeded


def test_texture_adds_heterogeneity_inside_the_body_only():
    plain = _hu(clean_slice(77, W))
    textured = _hu(clean_slice(77, W, texture_max_hu=40.0))
    changed = np.abs(textured - plain) > 1.0
    assert changed.mean() > 0.02
    assert changed[plain < -995].mean() < 0.01  # air stays air (but for the PSF-blurred body edge)


def test_regions_setting_draws_only_the_listed_regions():
    def lung_fraction(region: str, seed: int) -> float:
        hu = _hu(reference_slice(seed, TrainConfig(regions=region)))
        return float(((hu > -900) & (hu < -700)).mean())

    assert all(lung_fraction("chest", s) > 0.04 for s in range(3))
    assert all(lung_fraction("head,neck", s) < 0.02 for s in range(3))


def _lag1_correlation(noise: np.ndarray) -> float:
    a, b = noise[:, :, :, 1:].ravel(), noise[:, :, :, :-1].ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_gaussian_training_noise_is_white_with_the_drawn_sigma():
    stream = PatchStream(TrainConfig(sigma_min=0.05, sigma_max=0.05, **TINY_POOL))
    noisy, clean, _ = stream.batch(0)
    inside = (clean > 0.2) & (clean < 0.8)  # no clipping at the window's edges
    noise = (noisy - clean).numpy()
    assert float(noise[inside.numpy()].std()) == pytest.approx(0.05, rel=0.05)
    assert abs(_lag1_correlation(noise)) < 0.1


def test_low_dose_training_noise_is_correlated_with_the_drawn_level():
    cfg = TrainConfig(sigma_min=0.04, sigma_max=0.04, lowdose_fraction=1.0, **TINY_POOL)
    noisy, clean, _ = PatchStream(cfg).batch(0)
    noise = (noisy - clean).numpy()
    inside = ((clean > 0.2) & (clean < 0.8)).numpy()
    assert float(noise[inside].std()) == pytest.approx(0.045, rel=0.15)  # level + 0.005, std 1 per patch
    white = np.random.default_rng(0).standard_normal(noise.shape)
    assert abs(_lag1_correlation(noise) - _lag1_correlation(white)) > 0.1
    again, _, _ = PatchStream(cfg).batch(0)
    np.testing.assert_array_equal(noisy.numpy(), again.numpy())  # a batch depends on (seed, step) only


def test_low_dose_share_follows_the_setting():
    cfg = TrainConfig(sigma_min=0.03, sigma_max=0.1, lowdose_fraction=0.25, **dict(TINY_POOL, batch_size=64))
    noisy, clean, _ = PatchStream(cfg).batch(3)
    noise = (noisy - clean).numpy()
    # neighbouring pixels of FBP noise correlate (about 0.15 here), those of white noise do not
    corr = np.array([np.corrcoef(n[0, :, 1:].ravel(), n[0, :, :-1].ravel())[0, 1] for n in noise])
    assert 0.1 < float((corr > 0.09).mean()) < 0.45


def test_low_dose_patches_are_told_a_jittered_level_and_keep_their_noise():
    cfg = dict(sigma_min=0.03, sigma_max=0.1, lowdose_fraction=0.5, **dict(TINY_POOL, batch_size=64))
    noisy, clean, levels = PatchStream(TrainConfig(**cfg)).batch(3)
    j_noisy, j_clean, told = PatchStream(TrainConfig(lowdose_level_jitter=0.22, **cfg)).batch(3)
    np.testing.assert_array_equal(j_noisy.numpy(), noisy.numpy())  # the same patches and noise
    np.testing.assert_array_equal(j_clean.numpy(), clean.numpy())
    ratio = (told / levels).numpy()
    jittered = ratio != 1.0
    assert 16 < int(jittered.sum()) < 48  # about half the patches got low-dose noise
    log_ratio = np.log(ratio[jittered])
    assert abs(float(log_ratio.mean())) < 0.12 and 0.14 < float(log_ratio.std()) < 0.32
    noise = (noisy - clean).numpy()
    corr = np.array([np.corrcoef(n[0, :, 1:].ravel(), n[0, :, :-1].ravel())[0, 1] for n in noise])
    # FBP noise correlates between neighbouring pixels, white noise does not: only low-dose patches are jittered
    assert float(np.median(corr[jittered])) > 0.09 > 0.05 > float(np.median(corr[~jittered]))
    from models.training.card import describe_training

    assert describe_training(TrainConfig(lowdose_level_jitter=0.22, **cfg))["noise"].endswith(
        "for 50% of the patches instead low-dose CT noise (Poisson photon noise on simulated projections, FBP; std "
        "uniform in the same range + 0.005), told that std times exp(N(0, 0.22)) as a series estimate reads it")
    assert "exp(N" not in describe_training(TrainConfig(**cfg))["noise"]
    mixed = describe_training(TrainConfig(context=2, lowdose_fraction=0.5, volume_lowdose_fraction=0.3,
                                          kernel_fraction=0.3, lowdose_level_jitter=0.22))["noise"]
    assert ("for 50% of the lone-slice patches and 30% of the volume patches (each slice its own simulation) instead "
            "low-dose CT noise") in mixed
    assert "reads it; for 30% of the other patches noise shaped by a reconstruction kernel" in mixed
    white = TrainConfig(lowdose_level_jitter=0.22, **dict(cfg, lowdose_fraction=0.0))
    np.testing.assert_array_equal(PatchStream(white).batch(3)[2].numpy(),
                                  PatchStream(TrainConfig(**dict(cfg, lowdose_fraction=0.0))).batch(3)[2].numpy())


def test_config_file_with_overrides_and_unknown_settings(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"steps": 77, "regions": "head,neck", "native_noise_max_hu": 12.0}))
    cfg = load_config(path, steps=None, seed=9)
    assert (cfg.steps, cfg.regions, cfg.native_noise_max_hu, cfg.seed) == (77, "head,neck", 12.0, 9)
    assert load_config(path, steps=5).steps == 5
    assert load_config().steps == TrainConfig().steps
    from models.training.__main__ import _command_without_export

    for export in (["--export", "w.safetensors"], ["--export=w.safetensors"],  # the card's training command
                   ["--export", "w.safetensors", "--level-rule", "0.5,1.5", "--model-version=3.1.0-rc1"]):
        assert _command_without_export(["--config", "c.json", *export, "--run-dir", "r"]) == \
            "python -m models.training --config c.json --run-dir r"
    path.write_text(json.dumps({"stepz": 1}))
    with pytest.raises(ValueError, match="unknown training settings.*stepz"):
        load_config(path)


def test_every_committed_config_loads_with_shares_between_0_and_1():
    """A config is a run waiting to be started (often on another machine): one with a misspelt
    setting, a share outside [0, 1] or bad slice shares must fail here, not an hour into the run."""
    configs = sorted((Path(__file__).parents[1] / "models" / "configs").glob("*.json"))
    assert len(configs) >= 10
    for path in configs:
        cfg = load_config(path)
        shares = {k: v for k, v in dataclasses.asdict(cfg).items() if k.endswith("_fraction")}
        assert all(0.0 <= v <= 1.0 for v in shares.values()), (path.name, shares)
        if cfg.init_slice_shares:
            assert cfg.context and len(cfg.slice_shares) == 1 + 2 * cfg.context, path.name


def _anisotropy(field: np.ndarray, inside: np.ndarray) -> float:
    """Largest ratio of the variances of pixel differences along perpendicular directions (0 vs 90,
    45 vs 135 degrees), over pairs of pixels that are both ``inside``: 1 for isotropic noise."""
    pairs = [(np.s_[:, 1:], np.s_[:, :-1]), (np.s_[1:, :], np.s_[:-1, :]), (np.s_[1:, 1:], np.s_[:-1, :-1]),
             (np.s_[1:, :-1], np.s_[:-1, 1:])]
    v = [float((field[a] - field[b])[inside[a] & inside[b]].var()) for a, b in pairs]
    return max(v[0] / v[1], v[1] / v[0], v[2] / v[3], v[3] / v[2])


def test_streaky_native_noise_is_elongated_and_the_default_is_not():
    def anisotropy(seed: int, streaks: float) -> float:
        plain = _hu(clean_slice(seed, W, ALL_REGIONS))
        noisy = _hu(clean_slice(seed, W, ALL_REGIONS, native_noise_max_hu=30.0, streak_fraction=streaks))
        return _anisotropy(noisy - plain, (plain > -900) & (plain < 900))

    iso = [anisotropy(s, 0.0) for s in range(300, 304)]
    streaky = [anisotropy(s, 1.0) for s in range(300, 304)]
    assert max(iso) < 1.3
    assert max(streaky) > 2.0


def test_the_shipped_cards_commands_make_the_configs_they_record():
    """Each training run behind the shipped weights (a weight average: each parent's, down to the runs)
    is rebuilt by its card's command from the committed configs; a run that started from an earlier
    shipped model names a start with that model's sha256 (its weights lie in the git history, its card
    in models/weights/base/), or one network of it with the sha256 of the model it was taken from, or a
    candidate whose own runs the card carries; the network for lone slices' runs too; and 3.0.0's own
    card is
    ct_denoiser.json's recipe."""
    import shlex

    from models.store import load_model
    from models.training.__main__ import parse
    from tests.conftest import REPO

    card = load_model().card
    bases = {c["version"]: c for c in (json.loads(p.read_text())
                                        for p in (REPO / "models" / "weights" / "base").glob("ct_denoiser_v*.json"))}
    defaults = dataclasses.asdict(TrainConfig())  # settings added after a card was written: defaults

    def runs_behind(training: dict) -> list[dict]:  # a weight average's parents may be averages too
        if "parents" in training:
            return [r for p in training["parents"] for r in runs_behind(p["training"])]
        start = training.get("initialised_from", {})  # a run from a candidate carries the candidate's runs
        return [training, *runs_behind(start["training"])] if "training" in start else [training]

    runs = runs_behind(card["training"])
    if "lone_slices" in card["training"]:  # two networks: the one for lone slices has runs of its own
        runs += runs_behind(card["training"]["lone_slices"]["training"])
    for run in [*runs, bases["3.0.0"]["training"]]:
        argv = shlex.split(run["command"])
        assert argv[:3] == ["python", "-m", "models.training"]
        _, cfg = parse(argv[3:])
        made, recorded = dataclasses.asdict(cfg), {**defaults, **run["config"]}
        start = run.get("initialised_from", {})
        origin = start.get("split_from", start)  # one network of a shipped model (--split, --flat): that model
        if origin.get("version") in bases:  # an earlier shipped model: its card is kept, its sha256 named
            assert origin["sha256"] == bases[origin["version"]]["weights_sha256"]
        if start.get("version") == "3.0.0":  # 3.0.0 was the shipped file then; the configs name its copy now
            assert made["init_weights"] == "runs/base/ct_denoiser_v3.safetensors"
            made["init_weights"] = recorded["init_weights"]
        assert made == recorded
    starts = [r.get("initialised_from", {}) for r in runs]
    assert all(s.get("split_from", s).get("version") in bases for s in starts if "training" not in s)
    assert "models/configs/ct_denoiser.json" in bases["3.0.0"]["training"]["command"]


def test_streak_length_setting_makes_longer_streaks():
    from pipeline.synthetic.references import streaks as _streaks

    def reach(field: np.ndarray, d: float = 20.0) -> float:
        """The highest correlation of the field with itself shifted by d px, over 32 directions."""
        best = 0.0
        for a in np.linspace(0, np.pi, 32, endpoint=False):
            dy, dx = round(d * np.sin(a)), round(d * np.cos(a))
            shifted = np.roll(field, (dy, dx), axis=(0, 1))[64:-64, 64:-64]
            best = max(best, float(np.corrcoef(field[64:-64, 64:-64].ravel(), shifted.ravel())[0, 1]))
        return best

    short = [reach(_streaks(np.random.default_rng(s), 256)) for s in range(6)]
    long = [reach(_streaks(np.random.default_rng(s), 256, along_max=40.0)) for s in range(6)]
    assert max(short) < 0.15  # sigma <= 6 px along: exp(-20^2 / (4 * 6^2)) = 0.06
    assert np.mean(long) > 0.3 and max(long) > 0.6


def test_extra_streaks_add_their_drawn_energy_only_when_asked():
    for seed in (310, 311):  # slices drawn without streaks get none
        base = _hu(clean_slice(seed, W, ALL_REGIONS, native_noise_max_hu=20.0))
        same = _hu(clean_slice(seed, W, ALL_REGIONS, native_noise_max_hu=20.0, streak_max_hu=50.0))
        assert np.array_equal(base, same)
    kw = dict(native_noise_max_hu=20.0, streak_fraction=1.0)
    added = []
    for seed in range(320, 332):
        plain = _hu(clean_slice(seed, W, ALL_REGIONS, **kw))
        extra = _hu(clean_slice(seed, W, ALL_REGIONS, **kw, streak_max_hu=50.0))
        inside = (plain > -900) & (plain < 900) & (extra > -900) & (extra < 900)
        added.append(float((extra - plain)[inside].std()))
        assert _anisotropy(extra - plain, inside) > 2.0  # streaks, not grain
    assert 0 < min(added) and max(added) <= 50.0 * 1.1
    assert 18.0 < np.mean(added) < 40.0  # std uniform in [0, 50] HU: mean 25


def test_model_card_words_name_the_streak_settings():
    from models.training.card import describe_training

    plain = describe_training(TrainConfig(native_noise_max_hu=35.0, streak_fraction=0.6))["data"]
    extra = describe_training(TrainConfig(native_noise_max_hu=35.0, streak_fraction=0.6, streak_length_max_px=20.0,
                                          streak_max_hu=50.0))["data"]
    assert "partly streaky (streaks 2-6 px long) in 60% of the slices" in plain
    assert "partly streaky (streaks 2-20 px long, plus streaks of std up to 50 HU) in 60% of the slices" in extra


def test_zoomed_copies_resample_each_slice_and_divide_its_pixel_size(tmp_path, capsys):
    import shutil

    from pydicom.data import get_testdata_file

    from models.training.card import describe_training
    from models.training.data import Reference, zoomed

    ramp = Reference(np.tile(np.arange(100, dtype=np.float32) / 100, (80, 1)), 0.7, "ramp")
    big, small = zoomed([ramp], TrainConfig(zoom_factors="2, 0.5", patch=40))
    assert big.unit.shape == (160, 200) and big.pixel_mm == pytest.approx(0.35) and big.name == "ramp x2"
    x = np.arange(10, 190)
    np.testing.assert_allclose(big.unit[80, x], ((x + 0.5) / 2 - 0.5) / 100, atol=6e-4)  # centres kept (< 1/8 px)
    assert small.unit.shape == (40, 50) and small.pixel_mm == pytest.approx(1.4)
    assert zoomed([ramp], TrainConfig(zoom_factors="0.4", patch=40)) == []  # 32x40: smaller than a patch
    assert zoomed([ramp], TrainConfig(zoom_factors="", patch=40)) == []
    # a bad value stops a run when its settings are read (flags or JSON), before any data loads
    with pytest.raises(ValueError, match=r"^zoom_factors: 7 is outside \[0.2, 5\]$"):
        load_config(None, zoom_factors="1.5,7")
    with pytest.raises(ValueError, match=r"^zoom_factors: 'x2' is not a number$"):
        TrainConfig(zoom_factors="1.5, x2")

    from models.training.__main__ import parse
    with pytest.raises(SystemExit) as stop:  # the command line: one line naming it, no usage, exit 2
        parse(["--run-dir", str(tmp_path / "run"), "--zoom-factors", "1.5,9"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == "python -m models.training: error: zoom_factors: 9 is outside [0.2, 5]\n"
    assert not (tmp_path / "run").exists()

    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "ct.dcm")
    site = dict(source=str(tmp_path), patch=48, batch_size=4)
    pool = PatchStream(TrainConfig(zoom_factors="1.5", **site))._fixed_pool()
    assert [r.unit.shape for r in pool] == [(128, 128), (192, 192)]
    assert pool[1].pixel_mm == pytest.approx(pool[0].pixel_mm / 1.5)
    assert describe_training(TrainConfig(zoom_factors="1.5,2.5", **site))["data"].endswith(
        "; beside each lone slice its copies resampled 1.5, 2.5 times (pixels that much smaller; cubic interpolation)")
