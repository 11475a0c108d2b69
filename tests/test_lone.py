"""A slice-context model with a 2-D network for lone slices (models/autoencoder.py, models/training/lone.py):
which slices go where, the 2-D form of a context network, the one weights file and its card."""
import json

import numpy as np
import pytest
import torch

from models.autoencoder import DenoisingAutoencoder, collapse_slices, grow_state, lone_slices
from models.store import ModelLoadError, card_path, load_model, save_model
from models.training.config import TrainConfig
from models.training.lone import flatten, main, pair, split
from pipeline.errors import ConfigError
from pipeline.inference.denoiser import Denoiser
from tests.test_volumes import volume_set  # noqa: F401  (fixture)

ARCH = dict(width=4, levels=2, convs_per_level=1, noise_map=True, blocks=1)


def _jittered(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """``model`` with every weight moved off its initial value (zero-started blocks included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def _pair(context: int = 2) -> tuple[DenoisingAutoencoder, DenoisingAutoencoder, DenoisingAutoencoder]:
    """A context network, an unrelated 2-D network, and the two as one pair."""
    torch.manual_seed(1)
    stacks = _jittered(DenoisingAutoencoder(**ARCH, context=context), 2)
    flat = _jittered(DenoisingAutoencoder(**ARCH), 3)
    both = DenoisingAutoencoder(**ARCH, context=context, lone=flat.config).eval()
    both.load_state_dict({**stacks.state_dict(), **{f"lone.{k}": v for k, v in flat.state_dict().items()}})
    return stacks, flat, both


def test_the_2d_form_of_a_context_network_computes_what_it_does_on_a_lone_slice():
    stacks, _, _ = _pair()
    flat = DenoisingAutoencoder(**ARCH).eval()
    flat.load_state_dict(collapse_slices(stacks.state_dict(), stacks))
    x, level = torch.rand(2, 1, 24, 20), torch.tensor([0.02, 0.07])
    real = torch.rand(2, 5, 24, 20)
    with torch.no_grad():
        torch.testing.assert_close(flat(x, level), stacks(x.repeat(1, 5, 1, 1), level), rtol=0, atol=1e-5)
        real_out = stacks(real, level)
        assert float((flat(real[:, 2:3], level) - real_out).abs().max()) > 1e-3  # a real stack is another input
    with pytest.raises(ValueError, match="needs a network with slice context"):
        collapse_slices(flat.state_dict(), flat)


def test_a_pair_sends_stacks_without_a_neighbour_to_the_2d_network_and_the_others_to_the_context_network():
    stacks, flat, both = _pair()
    x = torch.rand(4, 5, 16, 16)
    x[0] = x[0, 2:3].repeat(5, 1, 1)  # a lone slice: its own neighbours
    x[3, :2] = x[3, 2:3]  # the first slice of a stack: replicated on one side only, a neighbour on the other
    assert lone_slices(x, 2).tolist() == [True, False, False, False]
    x[2] = x[2, 2:3].repeat(5, 1, 1)
    level = torch.tensor([0.02, 0.03, 0.05, 0.07])
    maps = torch.rand(4, 1, 16, 16) * 0.1  # a level map per slice follows its slice too
    with torch.no_grad():
        for told in (level, maps, 0.05):
            got = both(x, told)
            picked = (lambda rows: told[rows]) if torch.is_tensor(told) else (lambda rows: told)
            lone_rows, stack_rows = torch.tensor([0, 2]), torch.tensor([1, 3])
            torch.testing.assert_close(got[lone_rows], flat(x[lone_rows, 2:3], picked(lone_rows)), rtol=0, atol=0)
            torch.testing.assert_close(got[stack_rows], stacks(x[stack_rows], picked(stack_rows)), rtol=0, atol=0)
        lone_only = x[[0, 2]]
        torch.testing.assert_close(both(lone_only, level[[0, 2]]), flat(lone_only[:, 2:3], level[[0, 2]]))
        torch.testing.assert_close(both(x[[1, 3]], level[[1, 3]]), stacks(x[[1, 3]], level[[1, 3]]))
    assert both.config["lone"] == flat.config


def test_a_pair_is_refused_where_it_cannot_work():
    with pytest.raises(ValueError, match="needs a network with slice context beside it"):
        DenoisingAutoencoder(**ARCH, lone=dict(ARCH))
    with pytest.raises(ValueError, match="must be 2-D and told the noise level as this one is"):
        DenoisingAutoencoder(**ARCH, context=1, lone=dict(ARCH, context=1))
    with pytest.raises(ValueError, match="must be 2-D and told the noise level as this one is"):
        DenoisingAutoencoder(**ARCH, context=1, lone=dict(ARCH, noise_map=False))
    _, _, both = _pair(context=1)
    plain = DenoisingAutoencoder(**ARCH, context=1)
    with pytest.raises(ValueError, match="lone.stem.0.0.weight has no place"):
        grow_state(both.state_dict(), plain)  # a pair is exported, not trained further


def test_the_denoiser_runs_a_one_slice_series_and_a_slice_between_gaps_through_the_2d_network(tmp_path):
    stacks, flat, both = _pair(context=1)
    save_model(both, tmp_path / "pair.safetensors", {"name": "pair", "version": "0.1"})
    loaded = load_model(tmp_path / "pair.safetensors")
    den = Denoiser(loaded, device="cpu", batch_size=3)
    images = np.random.default_rng(0).random((5, 16, 16), dtype=np.float32)
    links = np.array([True, False, False, True])  # slices 0-1 and 3-4 are stacks, 2 is cut off on both sides
    out = den.denoise_unit(images, np.float32(0.05), links=links)
    x = torch.from_numpy(images)
    with torch.no_grad():
        want_lone = flat(x[2][None, None], 0.05)[0, 0]
        want_first = stacks(torch.stack([x[0], x[0], x[1]])[None], 0.05)[0, 0]
        want_last = stacks(torch.stack([x[3], x[4], x[4]])[None], 0.05)[0, 0]
    np.testing.assert_allclose(out[2], want_lone.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(out[0], want_first.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(out[4], want_last.numpy(), rtol=0, atol=1e-5)
    alone = den.denoise_unit(images[2:3], np.float32(0.05), links=np.zeros(0, bool))  # a one-slice series
    np.testing.assert_allclose(alone[0], out[2], rtol=0, atol=1e-6)


def test_a_pairs_lone_network_is_told_by_its_own_level_rule_and_the_stacks_by_theirs(tmp_path):
    from pipeline.inference.noise_level import SeriesNoise
    from pipeline.inference.window import Window, hu_to_unit
    _, _, both = _pair(context=1)
    rules = {"level_rule": {"exponent": 1.8, "max_gain": 1.5}, "lone_level_rule": {"exponent": 0.2, "max_gain": 1.25}}
    save_model(both, tmp_path / "pair.safetensors", {"name": "pair", "version": "0.1", **rules})
    den = Denoiser(load_model(tmp_path / "pair.safetensors"), device="cpu", batch_size=2, strength="full")
    blotchy, white = (SeriesNoise(40.0, 35.0, 45.0, 2, {"soft tissue": 2}, w) for w in (0.4, 1.0))
    assert den.lone_told_apart()
    assert den.level_hu(blotchy) == pytest.approx(40.0 * 1.5)  # 0.4 ** -1.8 = 5.2, at most 1.5x
    assert den.level_hu(blotchy, lone=True) == pytest.approx(40.0 * 0.4 ** -0.2)  # 1.20x
    assert den.level_hu(white, lone=True) == den.level_hu(white) == pytest.approx(40.0)
    hu = np.random.default_rng(1).normal(0, 200, (5, 16, 16)).astype(np.float32)
    links = np.array([True, False, False, True])  # slice 2 alone
    w = Window()
    got = den.denoise_hu(hu, w, blotchy, links=links)
    unit = np.clip(hu_to_unit(hu, w), 0, 1)
    told = np.float32([60.0, 60.0, 40.0 * 0.4 ** -0.2, 60.0, 60.0]) / np.float32(w.width)
    want = den.denoise_unit(unit, told, links=links)
    inside = (want > 0.05) & (want < 0.95)  # away from the window's edge band (the HU beyond it is put back)
    np.testing.assert_allclose(hu_to_unit(got, w)[inside], want[inside], rtol=0, atol=1e-5)
    one_level = den.denoise_unit(unit, np.float32(60.0 / w.width), links=links)
    assert np.abs(want[2] - one_level[2]).max() > 1e-4 and np.array_equal(want[[0, 1, 3, 4]], one_level[[0, 1, 3, 4]])
    np.testing.assert_allclose(den.denoise_hu(hu, w, blotchy, links=links, span=(1, 3)),
                               got[1:3], rtol=0, atol=1e-3)  # a span: each slice told as in the whole

    # without lone_level_rule both are told by level_rule; a 2-D model has no lone network to tell apart
    save_model(both, tmp_path / "one.safetensors",
               {"name": "pair", "version": "0.1", "level_rule": rules["level_rule"]})
    one = Denoiser(load_model(tmp_path / "one.safetensors"), device="cpu")
    assert not one.lone_told_apart() and one.level_hu(blotchy, lone=True) == pytest.approx(60.0)
    _, flat, _ = _pair(context=1)
    save_model(flat, tmp_path / "flat.safetensors", {"name": "flat", "version": "0.1", **rules})
    plain = Denoiser(load_model(tmp_path / "flat.safetensors"), device="cpu")
    assert not plain.lone_told_apart() and plain.level_hu(blotchy, lone=True) == pytest.approx(60.0)
    save_model(both, tmp_path / "bad.safetensors", {"name": "pair", "version": "0.1",
                                                     "lone_level_rule": {"exponent": -1, "max_gain": 1.25}})
    with pytest.raises(ConfigError, match="model card lone_level_rule needs exponent >= 0"):
        Denoiser(load_model(tmp_path / "bad.safetensors"), device="cpu")


def test_the_same_weights_told_by_another_level_rule_make_another_derived_series(tmp_path):
    from pipeline.settings import Settings
    from pipeline.study_run import derivation_info
    _, _, both = _pair(context=1)
    cards = {"none": {}, "rule": {"level_rule": {"exponent": 1.8, "max_gain": 1.5}},
             "lower": {"level_rule": {"exponent": 1.8, "max_gain": 1.25}},
             "lone": {"level_rule": {"exponent": 1.8, "max_gain": 1.5},
                      "lone_level_rule": {"exponent": 1.8, "max_gain": 1.25}}}
    weights = tmp_path / "pair.safetensors"
    save_model(both, weights, {"name": "pair", "version": "0.1"})
    card = json.loads(card_path(weights).read_text())
    prints, shas = {}, set()
    for key, rules in cards.items():  # one weights file, its card's rules edited
        card_path(weights).write_text(json.dumps({**card, **rules}))
        loaded = load_model(weights)
        shas.add(loaded.sha256)
        prints[key] = derivation_info(Settings(progress=False), Denoiser(loaded, device="cpu")).fingerprint
    assert len(shas) == 1 and len(set(prints.values())) == 4
    assert "rule" not in prints["none"]  # no rule named: the UIDs as before
    assert prints["lone"].endswith("|rule 1.8,1.5|lone-rule 1.8,1.25")


def test_a_series_with_lone_and_linked_slices_names_both_levels_in_its_provenance_and_description(
        series_writer, tmp_path):
    import pydicom

    from pipeline.dicom.discovery import scan
    from pipeline.settings import Settings
    from pipeline.study_run import process_scan, study_output_folder
    from pipeline.synthetic.kernel_noise import kernel_noise
    _, _, both = _pair(context=1)
    save_model(both, tmp_path / "pair.safetensors", {
        "name": "pair", "version": "0.1", "window_hu": [-1000, 1000],
        "level_rule": {"exponent": 1.8, "max_gain": 1.5}, "lone_level_rule": {"exponent": 0.2, "max_gain": 1.25}})
    yy, xx = np.mgrid[:96, :96]
    body = np.where((yy - 48) ** 2 + (xx - 48) ** 2 < 44**2, 1064.0, 0.0)  # 40 HU disc in air (-1024)
    vol = np.stack([body + kernel_noise(body.shape, "soft", 30.0, seed=k) for k in range(4)]).clip(0, 4000)
    vol = vol.astype(np.uint16)
    series_writer(tmp_path / "in", vol[:3], series="gap")  # 2 mm apart
    series_writer(tmp_path / "in", vol[3:], names=["far.dcm"], z0=30.0, index_offset=3, series="gap")  # 26 mm on
    settings = Settings(progress=False, qa_every=0, qa_panels=0, strength="full")
    den = Denoiser.from_settings(load_model(tmp_path / "pair.safetensors"), settings)
    (outcome,) = process_scan(scan(tmp_path / "in"), tmp_path / "out", settings, den)
    (s,) = outcome.series
    folder = study_output_folder(tmp_path / "out", outcome.study_uid) / s.derived_series_uid
    told = json.loads((folder / "provenance.json").read_text())["strength"]
    assert s.noise.whiteness < 0.75  # blotchy: the two rules tell different levels
    assert told["model_level_hu"] == pytest.approx(s.noise.sigma_hu * 1.5, abs=0.01) == s.model_level_hu
    lone_level = s.noise.sigma_hu * s.noise.whiteness ** -0.2
    assert told["model_level_hu_lone_slices"] == pytest.approx(lone_level, abs=0.01)
    text = pydicom.dcmread(sorted(folder.glob("*.dcm"))[0]).DerivationDescription
    assert f"model told {s.noise.sigma_hu * 1.5:.1f} HU ({lone_level:.1f} HU on its 1 lone slice(s))" in text


def test_the_pair_tool_writes_one_file_whose_card_names_both_and_is_measured_again(volume_set, tmp_path):  # noqa: F811
    from models.training.card import export
    from models.training.train import train

    cfg = TrainConfig(context=1, volumes_dir=str(volume_set), steps=2, checkpoint_every=2, val_every=1000,
                      val_slices=1, batch_size=2, patch=32, width=4, levels=1, convs_per_level=1, noise_map=True)
    train(cfg, tmp_path / "run", progress=False)
    ctx = tmp_path / "ctx.safetensors"
    export(cfg, tmp_path / "run", ctx, version="0.0.1")
    stacks = load_model(ctx)
    torch.manual_seed(4)
    flat = _jittered(DenoisingAutoencoder(width=4, levels=1, convs_per_level=2, noise_map=True), 5)
    save_model(flat, tmp_path / "flat.safetensors", {"name": "flat", "version": "0.0.2",
                                                      "window_hu": stacks.card["window_hu"]})
    out = tmp_path / "pair.safetensors"
    card = pair(ctx, tmp_path / "flat.safetensors", out, version="0.1.0", dtype=torch.float16)
    loaded = load_model(out)
    saved = json.loads(card_path(out).read_text())
    assert saved["version"] == card["version"] == "0.1.0" and saved["weights_sha256"] == loaded.sha256
    lone = saved["training"]["lone_slices"]
    assert lone["version"] == "0.0.2" and lone["sha256"] == load_model(tmp_path / "flat.safetensors").sha256
    assert "as it is" in lone["how"] and saved["training"]["config"] == stacks.card["training"]["config"]
    assert saved["training"]["command"] == stacks.card["training"]["command"]  # the stacks network's run
    assert lone["command"].startswith("python -m models.training.lone ")  # and what made this file
    assert saved["architecture"]["lone"] == flat.config and saved["architecture"]["context"] == 1
    assert saved["architecture"]["parameters"] == sum(p.numel() for p in loaded.model.parameters())
    assert saved["weights_dtype"].startswith("float16")
    assert saved["evaluation"]["phantoms"]["by_sigma"]["0.05"]["autoencoder"]["psnr_db"] > 0  # measured again
    assert "volume_validation" in saved["evaluation"]
    from safetensors.torch import load_file

    stored = load_file(str(out))
    assert {v.dtype for v in stored.values()} == {torch.float16}  # half the file
    for key, value in stacks.model.state_dict().items():  # the stacks network as it was, to float16 rounding
        torch.testing.assert_close(loaded.model.state_dict()[key], value.half().float(), rtol=0, atol=0)
    for key, value in flat.state_dict().items():
        torch.testing.assert_close(loaded.model.lone.state_dict()[key], value.half().float(), rtol=0, atol=0)

    # split apart again: each network bit for bit as the pair stores it, each card its own
    stacks_cards = split(out, tmp_path / "s.safetensors", tmp_path / "l.safetensors")
    stacks_alone, lone_alone = load_model(tmp_path / "s.safetensors"), load_model(tmp_path / "l.safetensors")
    parts = {"s": load_file(str(tmp_path / "s.safetensors")), "l": load_file(str(tmp_path / "l.safetensors"))}
    assert set(parts["s"]) | {f"lone.{k}" for k in parts["l"]} == set(stored)
    for key, value in stored.items():
        got = parts["l"][key.removeprefix("lone.")] if key.startswith("lone.") else parts["s"][key]
        assert got.dtype == torch.float16 and torch.equal(got, value)
    assert stacks_alone.model.lone is None and stacks_alone.model.context == 1 and not lone_alone.model.context
    assert stacks_cards[0]["version"] == "0.1.0-stacks" and lone_alone.card["version"] == "0.1.0-lone"
    assert stacks_alone.card["training"]["config"] == stacks.card["training"]["config"]
    assert "lone_slices" not in stacks_alone.card["training"] and "evaluation" not in stacks_alone.card
    assert lone_alone.card["split_from"]["sha256"] == loaded.sha256
    assert lone_alone.card["split_from"]["made_from_version"] == "0.0.2"
    assert lone_alone.card["input"].startswith("(batch, 1, H, W)") and "lone" not in stacks_alone.card["architecture"]
    assert "second, 2-D network" not in stacks_alone.card["architecture"]["description"]
    x, level = torch.rand(2, 3, 32, 32), torch.tensor([0.03, 0.06])
    x[0] = x[0, 1:2].repeat(3, 1, 1)  # one lone slice, one stack
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x, level)[1:], stacks_alone.model(x[1:], level[1:]), rtol=0, atol=0)
        torch.testing.assert_close(loaded.model(x, level)[:1], lone_alone.model(x[:1, 1:2], level[:1]), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="holds no network for lone slices; nothing to split"):
        split(tmp_path / "s.safetensors", tmp_path / "x.safetensors", tmp_path / "y.safetensors")
    with pytest.raises(SystemExit):
        main(["--split", str(out), "--out", str(tmp_path / "x.safetensors")])  # where would the 2-D network go
    main(["--split", str(out), "--out", str(tmp_path / "s2.safetensors"),
          "--lone-out", str(tmp_path / "l2.safetensors")])
    again_lone = load_file(str(tmp_path / "l2.safetensors"))  # (the header's metadata order varies: not the sha)
    assert all(torch.equal(again_lone[k], v) for k, v in parts["l"].items()) and again_lone.keys() == parts["l"].keys()

    # the 2-D form of a context model as a file of its own: a start for a network for lone slices
    main(["--flat", str(ctx), "--out", str(tmp_path / "flat2d.safetensors")])
    flat2d = load_model(tmp_path / "flat2d.safetensors")
    assert not flat2d.model.context and flat2d.card["version"] == "0.0.1-2d"
    assert flat2d.card["split_from"]["sha256"] == stacks.sha256 and flat2d.card["input"].startswith("(batch, 1, H, W)")
    with torch.no_grad():
        y = torch.rand(1, 1, 32, 32)
        torch.testing.assert_close(flat2d.model(y, torch.tensor([0.04])),
                                   stacks.model(y.repeat(1, 3, 1, 1), torch.tensor([0.04])), rtol=0, atol=1e-5)
    for not_one_context_network in (out, tmp_path / "flat2d.safetensors"):
        with pytest.raises(ConfigError, match="not a slice-context model with one network"):
            flatten(not_one_context_network, tmp_path / "x.safetensors")

    # a context model as the lone network: its 2-D form, in float32 when not asked otherwise
    again = tmp_path / "pair2.safetensors"
    main([str(ctx), "--lone", str(ctx), "--out", str(again), "--model-version", "0.1.1", "--level-rule", "1.8,1.5"])
    second = load_model(again)
    assert "summed into one" in second.card["training"]["lone_slices"]["how"]
    assert second.card["level_rule"]["exponent"] == 1.8 and "weights_dtype" not in second.card
    assert "lone_level_rule" not in second.card  # none asked: one rule for both networks
    third = tmp_path / "pair3.safetensors"
    main([str(ctx), "--lone", str(ctx), "--out", str(third), "--level-rule", "1.8,1.5",
          "--lone-level-rule", "0.2,1.25", "--rule-fitted-by", "chosen by hand"])
    third_card = load_model(third).card
    assert third_card["lone_level_rule"] == {"exponent": 0.2, "max_gain": 1.25, "fitted_by": "chosen by hand"}
    assert third_card["level_rule"]["fitted_by"] == "chosen by hand"
    main(["--split", str(third), "--out", str(tmp_path / "s3.safetensors"),
          "--lone-out", str(tmp_path / "l3.safetensors")])
    assert load_model(tmp_path / "l3.safetensors").card["level_rule"]["exponent"] == 0.2  # the lone network's own
    assert load_model(tmp_path / "s3.safetensors").card["level_rule"]["exponent"] == 1.8
    x, level = torch.rand(1, 1, 32, 32), torch.tensor([0.05])
    with torch.no_grad():
        torch.testing.assert_close(second.model(x.repeat(1, 3, 1, 1), level), stacks.model(x.repeat(1, 3, 1, 1), level),
                                   rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match="already holds a network for lone slices"):
        pair(ctx, again, tmp_path / "x.safetensors")
    with pytest.raises(ConfigError, match="goes with a slice-context model"):
        pair(tmp_path / "flat.safetensors", ctx, tmp_path / "x.safetensors")
    save_model(flat, tmp_path / "other.safetensors", {"name": "flat", "version": "0.0.3", "window_hu": [-160, 240]})
    with pytest.raises(ConfigError, match="window"):
        pair(ctx, tmp_path / "other.safetensors", tmp_path / "x.safetensors")
    with pytest.raises(SystemExit, match="error: .*already holds"):
        main([str(ctx), "--lone", str(again), "--out", str(tmp_path / "x.safetensors")])
    assert not (tmp_path / "x.safetensors").exists()
    # a pair's file needs its card's architecture
    with pytest.raises(ModelLoadError, match="do not match architecture"):
        card_path(out).write_text(json.dumps(dict(saved, architecture={k: v for k, v in saved["architecture"].items()
                                                                       if k != "lone"}, weights_sha256=None)))
        load_model(out)
