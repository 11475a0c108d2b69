"""A network told the noise's whiteness (``whiteness_map``): its input channel, its start from a
network without it, its training labels and what the pipeline tells it."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from models.autoencoder import DenoisingAutoencoder, blotchiness, grow_state
from models.store import load_model, save_model
from models.training.config import TrainConfig
from models.training.data import PatchStream
from models.training.train import train, train_step, whiteness_weights
from pipeline.inference.denoiser import Denoiser
from pipeline.inference.noise_level import SeriesNoise, noise_whiteness
from pipeline.inference.window import Window
from pipeline.synthetic.kernel_noise import kernel_noise
from tests.test_lone import _jittered

ARCH = dict(width=4, levels=2, convs_per_level=1, noise_map=True, blocks=1)
TINY_POOL = dict(batch_size=16, patch=48, pool_size=3, pool_refresh=1000)


def test_the_channel_is_one_minus_whiteness_within_0_and_1_and_needs_a_noise_map():
    got = blotchiness(torch.tensor([1.0, 0.3, 1.2, 0.0, math.nan, -0.5]))
    torch.testing.assert_close(got, torch.tensor([0.0, 0.7, 0.0, 1.0, 0.0, 1.0]))
    assert DenoisingAutoencoder(**ARCH, whiteness_map=True).config["whiteness_map"] is True
    assert "whiteness_map" not in DenoisingAutoencoder(**ARCH).config  # cards of other networks as they were
    with pytest.raises(ValueError, match="told its level too"):
        DenoisingAutoencoder(**dict(ARCH, noise_map=False), whiteness_map=True)


def test_a_network_grown_a_whiteness_map_computes_what_it_did_until_trained():
    torch.manual_seed(0)
    plain = _jittered(DenoisingAutoencoder(**ARCH), 1)
    told = DenoisingAutoencoder(**ARCH, whiteness_map=True).eval()
    told.load_state_dict(grow_state(plain.state_dict(), told))
    x, level = torch.rand(2, 1, 20, 24), torch.tensor([0.03, 0.07])
    with torch.no_grad():
        for whiteness in (1.0, 0.3, torch.tensor([0.2, 0.9])):
            torch.testing.assert_close(told(x, level, whiteness), plain(x, level), rtol=0, atol=1e-6)
        _jittered(told, 2)
        white, blotchy = told(x, level, 1.0), told(x, level, 0.3)
        torch.testing.assert_close(told(x, level), white)  # no whiteness: white
        assert float((white - blotchy).abs().max()) > 1e-3  # a trained channel changes the output
        per_row = told(x, level, torch.tensor([1.0, 0.3]))
        torch.testing.assert_close(per_row[0], white[0])
        torch.testing.assert_close(per_row[1], blotchy[1])
    regrown = DenoisingAutoencoder(**ARCH, whiteness_map=True)
    state = grow_state(told.state_dict(), regrown, source_whiteness=True)  # the same shape: copied
    torch.testing.assert_close(state["stem.0.0.weight"], told.state_dict()["stem.0.0.weight"])
    context = DenoisingAutoencoder(**ARCH, context=1, whiteness_map=True)
    grown = grow_state(told.state_dict(), context, source_whiteness=True)["stem.0.0.weight"]
    old = told.state_dict()["stem.0.0.weight"]
    torch.testing.assert_close(grown[:, 1], old[:, 0])  # the slice in the middle
    torch.testing.assert_close(grown[:, 3], old[:, 1])  # the noise map
    torch.testing.assert_close(grown[:, 4], old[:, 2])  # the whiteness map
    assert float(grown[:, [0, 2]].abs().max()) == 0.0
    with pytest.raises(ValueError, match="does not fit"):
        grow_state(told.state_dict(), DenoisingAutoencoder(**ARCH, context=1), source_whiteness=True)


def test_noise_whiteness_reads_white_noise_as_one_and_a_smooth_kernels_as_blotchy():
    rng = np.random.default_rng(3)
    assert noise_whiteness(rng.standard_normal((96, 96))) == pytest.approx(1.0, abs=0.06)
    assert noise_whiteness(5.0 * rng.standard_normal((96, 96))) == pytest.approx(1.0, abs=0.06)  # scale-free
    smooth, standard, sharp = (noise_whiteness(kernel_noise((192, 192), fc, 1.0, 4)[:96, :96])
                               for fc in (0.1, 0.2, 0.35))
    assert 0.2 < smooth < 0.45 and 0.7 < standard < 0.9 and sharp > 0.97  # a ramp's noise is finer than white
    assert noise_whiteness(np.zeros((8, 8))) == 1.0


def test_training_patches_are_told_their_noises_whiteness_and_keep_their_noise():
    cfg = dict(sigma_min=0.03, sigma_max=0.1, kernel_fraction=0.5, kernel_fc_max=0.25, **TINY_POOL)
    noisy, clean, levels = PatchStream(TrainConfig(**cfg)).batch(2)
    t_noisy, t_clean, t_levels, whiteness = PatchStream(TrainConfig(whiteness_map=True, **cfg)).batch(2)
    for a, b in ((noisy, t_noisy), (clean, t_clean), (levels, t_levels)):  # the same batch, one label more
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    w = whiteness.numpy()
    assert w.shape == (16,)
    shaped = w != 1.0  # white patches are told 1
    assert 3 <= int(shaped.sum()) <= 13  # about half got a kernel's noise
    assert float(w[shaped].max()) < 0.95 and float(w[shaped].min()) > 0.2  # fc 0.08-0.25: 0.21-0.94
    noise = (noisy - clean).numpy()[:, 0]
    corr = np.array([np.corrcoef(n[:, 1:].ravel(), n[:, :-1].ravel())[0, 1] for n in noise])
    assert float(corr[shaped].min()) > float(corr[~shaped].max())  # the blotchy ones are the correlated ones


def test_a_tiny_run_trains_and_exports_a_network_told_the_whiteness(tmp_path):
    from models.training.card import export

    cfg = TrainConfig(steps=2, checkpoint_every=2, noise_map=True, whiteness_map=True, width=4, blocks=1,
                      kernel_fraction=0.5, val_every=1000, **TINY_POOL)
    train(cfg, tmp_path / "run", progress=False, validate=False)
    export(cfg, tmp_path / "run", tmp_path / "w.safetensors", version="0.0.1-test")
    loaded = load_model(tmp_path / "w.safetensors")
    card = loaded.card
    assert card["architecture"]["whiteness_map"] is True and card["training"]["config"]["whiteness_map"] is True
    assert "whiteness" in card["input"] and "blotchiness" in card["architecture"]["description"]
    assert loaded.model.whiteness_map and loaded.model.stem[0][0].weight.shape[1] == 3


def test_the_whiteness_lr_factor_multiplies_the_channels_step_and_leaves_the_rest():
    torch.manual_seed(3)
    batch = (torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16), torch.full((4,), 0.05), torch.rand(4))
    steps = {}
    for factor in (1.0, 30.0):
        torch.manual_seed(4)
        model = DenoisingAutoencoder(**ARCH, whiteness_map=True)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        cfg = TrainConfig(noise_map=True, whiteness_map=True, whiteness_lr_factor=factor)
        train_step(cfg, model, opt, batch, "cpu")
        steps[factor] = {k: v - start[k] for k, v in model.state_dict().items()}
    first = "stem.0.0.weight"
    torch.testing.assert_close(steps[30.0][first][:, -1], 30 * steps[1.0][first][:, -1])
    assert float(steps[1.0][first][:, -1].abs().mean()) == pytest.approx(1e-3, rel=0.05)  # Adam: about lr a step
    torch.testing.assert_close(steps[30.0][first][:, :-1], steps[1.0][first][:, :-1])  # image and level channels
    torch.testing.assert_close(steps[30.0]["head.weight"], steps[1.0]["head.weight"])
    assert whiteness_weights(DenoisingAutoencoder(**ARCH)) is None
    with pytest.raises(ValueError, match="whiteness_lr_factor must be above 0 and needs whiteness_map"):
        TrainConfig(noise_map=True, whiteness_lr_factor=30.0)
    with pytest.raises(ValueError, match="whiteness_lr_factor"):
        TrainConfig(noise_map=True, whiteness_map=True, whiteness_lr_factor=0.0)


def test_the_denoiser_tells_the_network_the_series_whiteness(tmp_path):
    torch.manual_seed(0)
    model = _jittered(DenoisingAutoencoder(**ARCH, whiteness_map=True), 5)
    save_model(model, tmp_path / "w.safetensors", {"name": "w", "version": "0.1"})
    den = Denoiser(load_model(tmp_path / "w.safetensors"), device="cpu", batch_size=2, strength="full")
    window = Window()
    hu = np.random.default_rng(1).normal(40.0, 30.0, (3, 32, 32)).astype(np.float32)
    blotchy = SeriesNoise(30.0, 25.0, 35.0, 3, {"soft tissue": 3}, whiteness=0.4)
    white = SeriesNoise(30.0, 25.0, 35.0, 3, {"soft tissue": 3}, whiteness=1.0)
    got = den.denoise_hu(hu, window, blotchy)
    unit = np.clip((hu - window.low) / window.width, 0, 1)
    level = den.level_hu(blotchy) / window.width
    with torch.no_grad():
        want = model(torch.from_numpy(unit)[:, None], torch.full((3,), level), 0.4)[:, 0].numpy()
    np.testing.assert_allclose((got - window.low) / window.width, want, rtol=0, atol=2e-5)
    white_level = den.level_hu(white) / window.width
    with torch.no_grad():
        want_white = model(torch.from_numpy(unit)[:, None], torch.full((3,), white_level), 1.0)[:, 0].numpy()
    np.testing.assert_allclose((den.denoise_hu(hu, window, white) - window.low) / window.width, want_white,
                               rtol=0, atol=2e-5)
    assert float(np.abs(want - want_white).max()) > 1e-4


def test_a_pairs_lone_network_alone_is_told_the_whiteness_and_the_pair_round_trips(tmp_path):
    torch.manual_seed(0)
    stacks = _jittered(DenoisingAutoencoder(**ARCH, context=1), 6)
    flat = _jittered(DenoisingAutoencoder(**ARCH, whiteness_map=True), 7)
    both = DenoisingAutoencoder(**ARCH, context=1, lone=flat.config).eval()
    both.load_state_dict({**stacks.state_dict(), **{f"lone.{k}": v for k, v in flat.state_dict().items()}})
    save_model(both, tmp_path / "pair.safetensors", {"name": "pair", "version": "0.1"})
    loaded = load_model(tmp_path / "pair.safetensors")
    assert loaded.model.lone.whiteness_map and not loaded.model.whiteness_map
    x = torch.rand(3, 3, 16, 16)
    x[1] = x[1, 1:2].repeat(3, 1, 1)  # a lone slice
    level, whiteness = torch.tensor([0.03, 0.05, 0.07]), torch.tensor([1.0, 0.3, 0.5])
    with torch.no_grad():
        out = loaded.model(x, level, whiteness)
        torch.testing.assert_close(out[1], flat(x[1:2, 1:2], level[1:2], 0.3)[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(out[[0, 2]], stacks(x[[0, 2]], level[[0, 2]]), rtol=0, atol=1e-5)
        assert float((flat(x[1:2, 1:2], level[1:2], 1.0) - out[1]).abs().max()) > 1e-4
    def told(model, alone):  # a series of 3 slices, ``alone`` of them lone: is a network told the whiteness?
        den = Denoiser(dataclasses.replace(loaded, model=model), device="cpu", batch_size=2, strength="full")
        return den.tells_whiteness(alone, 3)
    # the lone network alone takes it: only a series with a lone slice tells it
    assert [told(loaded.model, alone) for alone in (0, 1, 3)] == [False, True, True]
    mirrored = DenoisingAutoencoder(**ARCH, context=1, whiteness_map=True, lone=DenoisingAutoencoder(**ARCH).config)
    assert [told(mirrored, alone) for alone in (0, 2, 3)] == [True, True, False]  # the stacks network alone
    assert [told(flat, alone) for alone in (0, 3)] == [True, True]  # no pair: one network for every slice


def test_the_derivation_description_names_the_whiteness_a_model_was_told():
    from pipeline.study_run import told_phrase

    noise = SeriesNoise(30.0, 25.0, 35.0, 3, {"soft tissue": 3}, whiteness=0.4237)
    assert told_phrase(noise, 33.0, whiteness=True) == ", model told 33.0 HU and whiteness 0.42"
    assert told_phrase(noise, 33.0) == ", model told 33.0 HU"  # a model not told it
    assert told_phrase(noise, None, whiteness=True) == ""  # a blind model is told nothing
