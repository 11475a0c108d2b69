"""A weight average of fine-tunes (models/training/average.py): exact means, a card that names its
parents, and one-line refusals."""
import json

import pytest
import torch

from models.store import card_path, load_model
from models.training.average import average, main
from models.training.card import export
from models.training.config import TrainConfig
from models.training.train import train
from pipeline.errors import ConfigError

TINY = dict(batch_size=4, patch=32, width=4, levels=1, convs_per_level=1, pool_size=2, pool_refresh=1000,
            val_slices=1, lr=3e-3, noise_map=True)


@pytest.fixture(scope="module")
def parents(tmp_path_factory):
    """Two tiny runs of one architecture, a third of another width."""
    root = tmp_path_factory.mktemp("parents")
    out = []
    for name, extra in (("a", {"seed": 1}), ("b", {"seed": 2, "lowdose_level_jitter": 0.1}), ("w", {"width": 8})):
        cfg = TrainConfig(steps=2, checkpoint_every=2, val_every=1000, **{**TINY, **extra})
        train(cfg, root / name, progress=False)
        export(cfg, root / name, root / f"{name}.safetensors", version=f"0.0.{name}")
        out.append(root / f"{name}.safetensors")
    return out


def test_the_average_is_the_share_weighted_mean_and_its_card_names_the_parents(parents, tmp_path):
    a, b, _ = parents
    out = tmp_path / "avg.safetensors"
    card = average([a, b], out, version="9.9.9", shares=[0.25, 0.75])
    la, lb, lavg = load_model(a), load_model(b), load_model(out)
    sa, sb = la.model.state_dict(), lb.model.state_dict()
    assert sa.keys() == lavg.model.state_dict().keys()
    for key, value in lavg.model.state_dict().items():
        torch.testing.assert_close(value, 0.25 * sa[key] + 0.75 * sb[key], rtol=0, atol=1e-6)
    assert not torch.equal(sa["head.weight"], sb["head.weight"])  # the parents differ, so the mean is a new model
    saved = json.loads(card_path(out).read_text())
    assert saved["version"] == card["version"] == "9.9.9" and saved["weights_sha256"] == lavg.sha256
    got = saved["training"]["parents"]
    assert [p["share"] for p in got] == [0.25, 0.75] and [p["version"] for p in got] == ["0.0.a", "0.0.b"]
    assert [p["sha256"] for p in got] == [la.sha256, lb.sha256]
    assert got[1]["training"]["config"]["lowdose_level_jitter"] == 0.1  # each parent's card whole
    assert "parent 2 (share 0.75)" in saved["training"]["noise"] and saved["training"]["config"]["seed"] == 1
    assert saved["training"]["config"] == got[0]["training"]["config"]  # the top-level config is parent 1's,
    assert saved["training"]["config_from"].startswith("parent 1's")  # and the card says so
    assert saved["evaluation"]["phantoms"]["by_sigma"]["0.05"]["autoencoder"]["psnr_db"] > 0  # measured again
    assert "level_rule" not in saved
    assert "not told the noise's whiteness" not in saved["training"]["method"]  # no parent grown


def test_equal_shares_by_default_and_a_level_rule_from_the_command_line(parents, tmp_path):
    a, b, _ = parents
    out = tmp_path / "avg.safetensors"
    main([str(a), str(b), "--out", str(out), "--model-version", "1.2.3", "--level-rule", "1.8,1.5"])
    card = load_model(out).card
    assert [p["share"] for p in card["training"]["parents"]] == [0.5, 0.5]
    assert card["level_rule"]["exponent"] == 1.8 and card["level_rule"]["max_gain"] == 1.5
    assert card["training"]["command"].startswith("python -m models.training.average ")
    assert "--level-rule 1.8,1.5" in card["training"]["command"]


def test_models_that_do_not_average_are_refused_in_one_line(parents, tmp_path, capsys):
    a, b, w = parents
    out = tmp_path / "avg.safetensors"
    with pytest.raises(ConfigError, match=r"w\.safetensors: architecture differs from a\.safetensors's"):
        average([a, w], out)
    with pytest.raises(ConfigError, match="shares must be positive and sum to 1"):
        average([a, b], out, shares=[0.5, 0.6])
    with pytest.raises(ConfigError, match="2 parent models but 3 shares"):
        average([a, b], out, shares=[0.2, 0.3, 0.5])
    with pytest.raises(ConfigError, match="at least two models"):
        average([a], out)
    with pytest.raises(SystemExit, match="nope.safetensors: model weights not found"):
        main([str(a), str(tmp_path / "nope.safetensors"), "--out", str(out)])
    assert not out.exists()  # nothing written for a refused average


def test_a_run_from_a_candidate_carries_the_candidates_training_and_one_from_a_release_does_not(parents, tmp_path):
    """No card of a candidate (version 0.0.1-rc.1) is kept anywhere: a run started from it carries its
    training, so the chain down to a released model stays in the shipped card; a released start (0.0.a)
    is named by version and sha256 only."""
    a, _, _ = parents
    cfg = TrainConfig(steps=1, checkpoint_every=1, val_every=1000, init_weights=str(a), **TINY)
    train(cfg, tmp_path / "rc1", progress=False)
    first = export(cfg, tmp_path / "rc1", tmp_path / "rc1.safetensors", version="0.0.1-rc.1")
    assert first["training"]["initialised_from"]["version"] == "0.0.a"
    assert "training" not in first["training"]["initialised_from"]
    cfg2 = TrainConfig(steps=1, checkpoint_every=1, val_every=1000, init_weights=str(tmp_path / "rc1.safetensors"),
                       seed=9, **TINY)
    train(cfg2, tmp_path / "rc2", progress=False)
    second = export(cfg2, tmp_path / "rc2", tmp_path / "rc2.safetensors", version="0.0.1-rc.2")
    start = second["training"]["initialised_from"]
    assert start["version"] == "0.0.1-rc.1" and start["sha256"] == load_model(tmp_path / "rc1.safetensors").sha256
    assert start["training"]["config"]["init_weights"] == str(a)  # the candidate's own run, whole
    assert start["training"]["initialised_from"]["version"] == "0.0.a"


def test_a_parent_not_told_the_whiteness_averages_with_one_grown_from_it_at_zero_weights(parents, tmp_path):
    """The whiteness channel is the stem's last input: the average takes it, at the told parent's
    weights times its share (the other parent counts as zero there, as the grown network started);
    every other weight is the plain mean, whichever parent comes first."""
    a, b, w = parents
    cfg = TrainConfig(steps=2, checkpoint_every=2, val_every=1000, init_weights=str(a), whiteness_map=True,
                      whiteness_lr_factor=30, kernel_fraction=0.5, kernel_fc_max=0.25, sigma_min=0.03, **TINY)
    train(cfg, tmp_path / "white", progress=False)
    told = tmp_path / "white.safetensors"
    export(cfg, tmp_path / "white", told, version="0.0.white")
    lt, la = load_model(told), load_model(a)
    st, sa = lt.model.state_dict(), la.model.state_dict()
    assert st["stem.0.0.weight"][:, -1].abs().sum() > 0  # the told parent has learnt the channel
    for order, shares in (([a, told], [0.25, 0.75]), ([told, a], [0.75, 0.25])):
        out = tmp_path / "avg.safetensors"
        card = average(order, out, version="9.9.8", shares=shares)
        got = load_model(out)
        assert got.model.whiteness_map and card["architecture"]["whiteness_map"] is True
        state = got.model.state_dict()
        stem = state["stem.0.0.weight"]
        torch.testing.assert_close(stem[:, -1], 0.75 * st["stem.0.0.weight"][:, -1], rtol=0, atol=1e-6)
        torch.testing.assert_close(stem[:, :-1], 0.25 * sa["stem.0.0.weight"] + 0.75 * st["stem.0.0.weight"][:, :-1],
                                   rtol=0, atol=1e-6)
        torch.testing.assert_close(state["head.weight"], 0.25 * sa["head.weight"] + 0.75 * st["head.weight"],
                                   rtol=0, atol=1e-6)
        assert "whiteness" in card["input"]
        grown = 1 + order.index(a)
        method = card["training"]["method"]
        assert f"parent {grown}, not told the noise's whiteness, counted with zero weights" in method
    with pytest.raises(ConfigError, match=r"w\.safetensors: architecture differs from white\.safetensors's"):
        average([told, w], out)  # another width still does not average
