"""Training with slice context: the real volumes' split by series (models/training/volumes.py) and
patches of a slice with its neighbours (PatchStream), on a small set of volumes written here."""
import copy
import csv
import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from models.training import volumes
from models.training.config import TrainConfig
from models.training.data import PatchStream, validation_set


@pytest.fixture
def volume_set(tmp_path, monkeypatch):
    """Five 'series' of 4 slices (CT_small with a per-slice offset), as realct_volumes lays them out."""
    monkeypatch.setattr(volumes, "SPLIT_SIZES", {"train": 2, "validation": 1, "test": 1})
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    pixels = base.pixel_array.astype(np.int16)
    rows = []
    for s in range(5):
        for k in range(4):
            ds = copy.deepcopy(base)
            px = pixels + np.int16(100 * k)  # a different slice at each z
            ds.PixelData = px.tobytes()
            name = f"sts_{s:03d}/sts_{s:03d}_{k:03d}.dcm"
            (tmp_path / name).parent.mkdir(exist_ok=True)
            ds.save_as(tmp_path / name)
            rows.append({"file": name, "series": f"sts_{s:03d}", "terms": "test", "z_mm": f"{-3.0 * k:.2f}",
                         "pixel_mm": "0.66"})
    with open(tmp_path / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return tmp_path


def test_volumes_split_by_series_in_name_order_and_load_in_stack_order(volume_set):
    parts = volumes.split(volume_set)
    assert parts == {"train": ["sts_000", "sts_001", "sts_004"], "validation": ["sts_002"], "test": ["sts_003"]}
    (vol,) = volumes.load_part("validation", volume_set)
    assert vol.hu.shape == (4, 128, 128) and np.all(np.diff(vol.z_mm) > 0)  # sorted by z: -9, -6, -3, 0
    slope = float(pydicom.dcmread(get_testdata_file("CT_small.dcm")).RescaleSlope)
    assert np.allclose(vol.hu[0] - vol.hu[3], 300 * slope)  # z -9 is slice k 3 (offset 300 stored)
    with pytest.raises(ValueError, match="part must be one of"):
        volumes.load_part("tune", volume_set)


def test_context_patches_hold_the_slice_its_neighbours_and_shared_noise_where_replicated(volume_set):
    cfg = TrainConfig(context=1, volumes_dir=str(volume_set), patch=48, batch_size=16, sigma_min=0.02,
                      sigma_max=0.02, window_low=-1000, window_high=1000)
    noisy, clean, levels = PatchStream(cfg).batch(0)
    assert noisy.shape == (16, 3, 48, 48) and clean.shape == (16, 1, 48, 48) and np.allclose(levels.numpy(), 0.02)
    n, c = noisy.numpy(), clean.numpy()[:, 0]
    inside = (c > 0.1) & (c < 0.9)
    assert float((n[:, 1] - c)[inside].std()) == pytest.approx(0.02, rel=0.1)  # the middle channel: the slice
    slope = float(pydicom.dcmread(get_testdata_file("CT_small.dcm")).RescaleSlope)
    step = np.median(np.abs(n[:, 0] - n[:, 1]), axis=(1, 2))  # neighbours are 100 x slope HU apart, or the same
    replicated = [b for b in range(16) if np.array_equal(n[b, 0], n[b, 1]) or np.array_equal(n[b, 2], n[b, 1])]
    assert all(s == pytest.approx(100 * slope / 2000, abs=0.02) for b, s in enumerate(step)
               if not np.array_equal(n[b, 0], n[b, 1]))
    assert replicated  # end slices of 4-slice volumes occur in 16 draws: their missing neighbour is the slice itself
    again, _, _ = PatchStream(cfg).batch(0)
    np.testing.assert_array_equal(n, again.numpy())  # a batch depends on (seed, step) only
    (ref,) = validation_set(cfg)
    assert ref.stack.shape == (3, 128, 128) and np.array_equal(ref.stack[1], ref.unit)
    flat = TrainConfig(source="volumes", volumes_dir=str(volume_set), patch=48, batch_size=4)  # the 2-D control
    noisy2d, clean2d, _ = PatchStream(flat).batch(0)
    assert noisy2d.shape == (4, 1, 48, 48) and validation_set(flat)[0].stack.shape == (1, 128, 128)


def test_a_tiny_context_model_trains_end_to_end(volume_set, tmp_path):
    from models.training.train import train

    cfg = TrainConfig(context=1, volumes_dir=str(volume_set), steps=40, checkpoint_every=20, val_every=20,
                      batch_size=4, patch=32, width=4, levels=1, convs_per_level=1, lr=3e-3, noise_map=True)
    run = tmp_path / "run"
    last = train(cfg, run, progress=False)
    rows = (run / "train_log.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[1]) for r in rows]
    assert len(losses) == 2 and losses[1] < losses[0] and last["val_psnr"] > 15


def test_the_context_bench_scores_every_method_on_the_same_noisy_volume(volume_set, tmp_path, capsys):
    import torch

    from bench.context import main, noisy_volume
    from models.autoencoder import DenoisingAutoencoder
    from models.store import save_model
    from pipeline.inference.window import Window, hu_to_unit
    from pipeline.qa.metrics import psnr

    torch.manual_seed(0)
    path = tmp_path / "ctx.safetensors"
    save_model(DenoisingAutoencoder(width=4, levels=1, convs_per_level=1, noise_map=True, context=1), path,
               {"name": "ctx-test", "version": "0.0.1", "window_hu": [-1000, 1000]})
    main(["--part", "test", "--levels", "0.05", "--weights", str(path), "--volumes-dir", str(volume_set),
          "--no-bm3d", "--no-bm4d"])
    table = capsys.readouterr().out
    (vol,) = volumes.load_part("test", volume_set)
    noisy, told = noisy_volume(vol, "0.05")
    np.testing.assert_array_equal(noisy, noisy_volume(vol, "0.05")[0])  # seeded per series and slice
    assert told == 0.05
    assert not np.array_equal(noisy[0] - hu_to_unit(vol.hu[0], Window()), noisy[1] - hu_to_unit(vol.hu[1], Window()))
    ref = np.clip(hu_to_unit(vol.hu, Window()), 0, 1)
    expected = np.mean([psnr(r, np.clip(x, 0, 1)) for r, x in zip(ref, noisy)])
    assert f"| noisy | {expected:.2f} |" in table and "| ctx-test 0.0.1 (context 1) |" in table
    main(["--part", "test", "--levels", "0.05", "--weights", str(path), "--volumes-dir", str(volume_set),
          "--no-bm3d", "--no-bm4d", "--digits", "4"])
    assert f"| noisy | {expected:.4f} |" in capsys.readouterr().out  # four decimals where asked
    twin = tmp_path / "twin.safetensors"  # another candidate of the same name and version: both rows kept
    save_model(DenoisingAutoencoder(width=4, levels=1, convs_per_level=1, noise_map=True, context=1), twin,
               {"name": "ctx-test", "version": "0.0.1", "window_hu": [-1000, 1000]})
    main(["--part", "test", "--levels", "0.05", "--weights", str(path), str(twin), "--volumes-dir", str(volume_set),
          "--no-bm3d", "--no-bm4d"])
    table = capsys.readouterr().out
    assert f"| ctx-test 0.0.1 (context 1) {path} |" in table and f"| ctx-test 0.0.1 (context 1) {twin} |" in table


def test_the_context_bench_gives_each_slice_its_own_low_dose_simulation_and_tells_one_std(volume_set, capsys):
    from bench.context import main, noisy_volume
    from pipeline.inference.window import Window, hu_to_unit
    from pipeline.qa.noise import seed_from_uid
    from pipeline.synthetic.lowdose import low_dose_noise_whole_hu

    (vol,) = volumes.load_part("test", volume_set)
    noisy, told = noisy_volume(vol, "lowdose@20000")
    added = noisy - hu_to_unit(vol.hu, Window())
    for k in (0, 3):  # the pipeline's simulation of that slice, with the slice's own seed
        expected = low_dose_noise_whole_hu(vol.hu[k], vol.pixel_mm, 2e4, seed_from_uid(f"{vol.series}/{k}", "context"))
        np.testing.assert_allclose(added[k], expected / 2000, atol=1e-5)
    stds = [float(a[a != 0].std()) for a in added]
    assert told == pytest.approx(float(np.sqrt(np.mean(np.square(stds)))), rel=1e-3) and min(stds) > 0.002
    assert not np.allclose(added[0], added[1], atol=1e-3)  # its own noise per slice
    main(["--part", "test", "--levels", "lowdose@20000", "--volumes-dir", str(volume_set), "--no-bm3d", "--no-bm4d",
          "--weights", str(Path(__file__).resolve().parents[1] / "models" / "weights" / "ct_denoiser.safetensors")])
    table = capsys.readouterr().out
    assert f"| lowdose@20000 (told {told * 2000:.0f} HU, the mean of the volumes' added std) |" in table


def test_the_context_bench_adds_kernel_noise_per_slice_and_runs_the_blotchy_pass_where_the_series_gates_it(
        volume_set, capsys):
    from bench.context import main, noisy_volume
    from pipeline.inference.noise_level import estimate_series
    from pipeline.inference.polyphase import MAX_WHITENESS
    from pipeline.inference.window import Window, hu_to_unit
    from pipeline.qa.noise import seed_from_uid
    from pipeline.synthetic.kernel_noise import kernel_noise

    (vol,) = volumes.load_part("test", volume_set)
    noisy, told = noisy_volume(vol, "soft@0.03")
    added = noisy - hu_to_unit(vol.hu, Window())
    expected = kernel_noise(vol.hu[2].shape, "soft", 0.03, seed_from_uid(f"{vol.series}/2", "context"))
    np.testing.assert_allclose(added[2], expected, atol=1e-5)
    assert told == 0.03 and not np.allclose(added[0], added[1], atol=1e-3)
    assert estimate_series(list(noisy * 2000 - 1000)).whiteness < MAX_WHITENESS  # blotchy: the pass applies
    shipped = str(Path(__file__).resolve().parents[1] / "models" / "weights" / "ct_denoiser.safetensors")
    rows = {}
    for thick, level in (("2", "soft@0.03"), ("2", "0.05"), ("1", "soft@0.03")):  # 6 mm apart: each slice alone
        main(["--part", "test", "--levels", level, "--volumes-dir", str(volume_set), "--no-bm3d", "--no-bm4d",
              "--untold", "--blotchy-pass", "--weights", shipped, "--thick", thick])
        table = capsys.readouterr().out
        cells = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()]
        rows[thick, level] = [float(c[1]) for c in cells if len(c) == 4 and "told nothing" in c[0]]
        assert len(rows[thick, level]) == 2 and ", told nothing, blotchy_pass mean |" in table
    once, mean = rows["2", "soft@0.03"]
    assert mean != once  # blotchy noise, lone slices: the second pass changed the result
    assert len(set(rows["2", "0.05"])) == 1  # white noise: the gate keeps the pass off
    assert len(set(rows["1", "soft@0.03"])) == 1  # 3 mm apart, with neighbours: left as they are


def test_a_context_model_exports_with_a_card_measured_on_its_volumes_and_on_lone_slices(volume_set, tmp_path):
    """The card of a context model: phantoms scored as lone slices (their noisy copy repeated as the
    neighbours), the validation volumes with their real neighbours; its input says how many slices."""
    from models.store import load_model
    from models.training.card import export
    from models.training.train import train

    cfg = TrainConfig(context=1, volumes_dir=str(volume_set), steps=4, checkpoint_every=4, val_every=4, val_slices=1,
                      batch_size=2, patch=32, width=4, levels=1, convs_per_level=1, noise_map=True)
    train(cfg, tmp_path / "run", progress=False)
    card = export(cfg, tmp_path / "run", tmp_path / "ctx.safetensors")
    assert card["input"].startswith("(batch, 3, H, W): the slice and 1 neighbouring slice(s)")
    phantoms = card["evaluation"]["phantoms"]["by_sigma"]["0.07"]
    volume = card["evaluation"]["volume_validation"]["by_sigma"]["0.07"]
    assert phantoms["noisy"] != volume["noisy"]  # two different sets of references
    for table in (phantoms, volume):
        assert set(table) == {"noisy", "autoencoder", "gaussian", "average", "median", "bilateral", "nlm"}
        assert table["gaussian"]["psnr_db"] > table["noisy"]["psnr_db"]  # the filters see the slice itself
    assert load_model(tmp_path / "ctx.safetensors").model.context == 1


def test_a_context_run_from_2d_weights_starts_with_its_first_layer_spread_over_the_stack(volume_set, tmp_path):
    """init_slice_shares: the grown start's first layer reads the neighbours from step 0 (at a negligible
    learning rate, one step leaves it there), and the card names the shares."""
    import torch
    from safetensors.torch import load_file

    from models.autoencoder import DenoisingAutoencoder, grow_state, spread_slices
    from models.store import save_model
    from models.training.card import export
    from models.training.train import train

    torch.manual_seed(5)
    flat = DenoisingAutoencoder(width=4, levels=1, convs_per_level=1, noise_map=True)
    save_model(flat, tmp_path / "flat.safetensors", {"name": "flat", "version": "0.1"})
    cfg = TrainConfig(context=1, volumes_dir=str(volume_set), steps=1, checkpoint_every=1, val_every=1000,
                      val_slices=1, batch_size=2, patch=32, width=4, levels=1, convs_per_level=1, noise_map=True,
                      lr=1e-12, init_weights=str(tmp_path / "flat.safetensors"), init_slice_shares="0.25,0.5,0.25")
    train(cfg, tmp_path / "run", progress=False)
    grown = DenoisingAutoencoder(width=4, levels=1, convs_per_level=1, noise_map=True, context=1)
    want = spread_slices(grow_state(flat.state_dict(), grown), grown, [0.25, 0.5, 0.25])["stem.0.0.weight"]
    got = load_file(str(tmp_path / "run" / "checkpoint.safetensors"))["model.stem.0.0.weight"]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert float(got[:, 0].abs().min()) > 0  # grown alone, the neighbour channels would start at zero
    card = export(cfg, tmp_path / "run", tmp_path / "spread.safetensors")
    assert card["training"]["initialised_from"]["first_layer_spread_over_the_stack"] == [0.25, 0.5, 0.25]
    with pytest.raises(ValueError, match="give init_weights as well"):
        train(dataclasses.replace(cfg, init_weights=""), tmp_path / "none", progress=False)
    with pytest.raises(ValueError, match="needs a network with slice context"):
        train(dataclasses.replace(cfg, context=0, source="volumes", init_slice_shares="1"), tmp_path / "flat",
              progress=False)


def test_mixed_context_batches_hold_volume_patches_and_lone_slices_that_are_their_own_neighbours(volume_set, tmp_path):
    """Slice context trained on the volumes AND the real CT set's lone slices: the lone ones repeat the
    noisy slice as both neighbours (as the pipeline runs a one-slice series); validation and the card
    score both kinds."""
    from models.training.card import export
    from models.training.train import train
    from tests.test_realct import _fake_set

    real = _fake_set(tmp_path / "realct")
    cfg = TrainConfig(context=1, source="realct", realct_dir=str(real), volumes_dir=str(volume_set),
                      volume_fraction=0.5, patch=48, batch_size=16, sigma_min=0.03, sigma_max=0.03)
    noisy, clean, levels = PatchStream(cfg).batch(0)
    n, c = noisy.numpy(), clean.numpy()[:, 0].astype(np.float64)
    lone = [b for b in range(16) if np.array_equal(n[b, 0], n[b, 1]) and np.array_equal(n[b, 2], n[b, 1])]
    assert 0 < len(lone) < 16 and lone == list(range(16 - len(lone), 16))  # volume patches first, then lone ones
    fake_values = {0.0, round((40 + 1000) / 2000, 3)}  # the fake set: air and a 40 HU square
    for b in range(16):
        is_fake = set(np.round(np.unique(c[b]), 3)) <= fake_values
        assert is_fake == (b in lone)
    assert np.allclose(levels.numpy(), 0.03)
    np.testing.assert_array_equal(n, PatchStream(cfg).batch(0)[0].numpy())  # still (seed, step) only
    only_volumes = PatchStream(TrainConfig(**{**cfg.__dict__, "volume_fraction": 1.0})).batch(0)[0].numpy()
    assert not any(np.array_equal(b[0], b[1]) and np.array_equal(b[2], b[1]) for b in only_volumes[:, :, :8, :8]
                   if b[1].std() > 0)
    refs = validation_set(cfg)
    assert [r.stack is None for r in refs] == [False, True]  # the validation volume's middle, the real slice

    small = TrainConfig(**{**cfg.__dict__, "steps": 2, "checkpoint_every": 2, "val_every": 2, "val_slices": 1,
                           "batch_size": 2, "patch": 32, "width": 4, "levels": 1, "convs_per_level": 1,
                           "noise_map": True, "sigma_max": 0.1})
    train(small, tmp_path / "run", progress=False)
    card = export(small, tmp_path / "run", tmp_path / "mixed.safetensors")
    ev = card["evaluation"]
    assert {"phantoms", "volume_validation", "real_validation"} <= set(ev)
    assert ev["volume_validation"]["by_sigma"]["0.07"]["noisy"] != ev["real_validation"]["by_sigma"]["0.07"]["noisy"]
    assert card["training"]["data"].startswith("for 50% of the patches (binomial per batch) the training part of the "
                                               "contiguous real volumes")


def test_a_2d_network_may_take_single_volume_slices_beside_the_sources_lone_slices(volume_set, tmp_path):
    """lone_volume_fraction: a network for lone slices (context 0) trained on the real CT set's slices
    and, for that share of the patches, single slices of the volumes, each alone."""
    from models.training.card import describe_training
    from tests.test_realct import _fake_set

    real = _fake_set(tmp_path / "realct")
    cfg = TrainConfig(context=0, source="realct", realct_dir=str(real), volumes_dir=str(volume_set),
                      lone_volume_fraction=0.5, patch=48, batch_size=16, sigma_min=0.03, sigma_max=0.03)
    noisy, clean, levels = PatchStream(cfg).batch(0)
    assert noisy.shape == (16, 1, 48, 48) and clean.shape == (16, 1, 48, 48)
    c = clean.numpy()[:, 0].astype(np.float64)
    fake_values = {0.0, round((40 + 1000) / 2000, 3)}  # the fake set: air and a 40 HU square
    from_volumes = [not set(np.round(np.unique(c[b]), 3)) <= fake_values for b in range(16)]
    count = sum(from_volumes)
    assert 0 < count < 16 and from_volumes == [True] * count + [False] * (16 - count)  # volume slices first
    np.testing.assert_array_equal(noisy.numpy(), PatchStream(cfg).batch(0)[0].numpy())  # (seed, step) only
    plain = PatchStream(TrainConfig(**{**cfg.__dict__, "lone_volume_fraction": 0.0})).batch(0)[1].numpy()[:, 0]
    assert all(set(np.round(np.unique(b.astype(np.float64)), 3)) <= fake_values for b in plain)
    assert [r.stack is None for r in validation_set(cfg)] == [True]  # validated on the lone slices
    assert describe_training(cfg)["data"].startswith(
        "for 50% of the patches (binomial per batch) single slices of the training part of the contiguous real volumes")
    for bad, message in ((dict(lone_volume_fraction=1.5), "must lie in"),
                         (dict(lone_volume_fraction=0.5, context=1), "is for a 2-D network")):
        with pytest.raises(ValueError, match=message):
            TrainConfig(**{**cfg.__dict__, **bad})


def test_volume_patches_get_low_dose_noise_of_their_own_anatomy_when_asked(volume_set):
    base = dict(context=1, volumes_dir=str(volume_set), patch=48, batch_size=8, sigma_min=0.03, sigma_max=0.03,
                kernel_fraction=0.0)
    white, clean, _ = PatchStream(TrainConfig(**base)).batch(0)
    lowdose, clean_ld, levels = PatchStream(TrainConfig(volume_lowdose_fraction=1.0, **base)).batch(0)
    noise = {}
    for name, noisy, target in (("white", white, clean), ("lowdose", lowdose, clean_ld)):
        c = target.numpy()[:, 0]
        noise[name] = noisy.numpy()[:, 1] - c  # the middle channel: the slice itself
        inside = (c > 0.1) & (c < 0.9)
        assert float(noise[name][inside].std()) == pytest.approx(0.03, rel=0.2)
    assert np.allclose(levels.numpy(), 0.03)  # told the drawn std, as for white noise
    # low-dose noise is ramp-filtered: less power at low frequencies than white noise of the same std
    assert _low_share(noise["lowdose"]) < 0.6 * _low_share(noise["white"])
    again, _, _ = PatchStream(TrainConfig(volume_lowdose_fraction=1.0, **base)).batch(0)
    np.testing.assert_array_equal(lowdose.numpy(), again.numpy())  # a batch depends on (seed, step) only
    jittered, clean_j, told = PatchStream(TrainConfig(volume_lowdose_fraction=1.0, lowdose_level_jitter=0.3,
                                                      **base)).batch(0)
    np.testing.assert_array_equal(jittered.numpy(), lowdose.numpy())  # the same patches and noise
    np.testing.assert_array_equal(clean_j.numpy(), clean_ld.numpy())
    ratio = told.numpy() / levels.numpy()
    assert len(np.unique(ratio)) == len(ratio) and 0.4 < ratio.min() < 1.0 < ratio.max() < 2.5


def _low_share(noise: np.ndarray) -> float:
    """Share of the noise power below 0.1 cycles per pixel."""
    power = np.abs(np.fft.fft2(noise - noise.mean(axis=(1, 2), keepdims=True))) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(noise.shape[1]), np.fft.fftfreq(noise.shape[2]), indexing="ij"))
    return float(power[:, f < 0.1].sum() / power.sum())


def _grain_pair(share=1.0, **settings):
    """The same batch without grain and with ``share`` of the patches given grain: (input, target, told) of each."""
    plain = PatchStream(TrainConfig(**settings)).batch(0)
    grainy = PatchStream(TrainConfig(grain_fraction=share, grain_max=0.02, **settings)).batch(0)
    return [t.numpy() for t in plain], [t.numpy() for t in grainy]


def test_grain_goes_into_target_and_input_untold_and_only_in_its_share():
    lone = dict(pool_size=4, pool_refresh=1000, patch=48, val_slices=1, sigma_min=0.03, sigma_max=0.03)
    (n0, c0, l0), (n1, c1, l1) = _grain_pair(batch_size=16, **lone)
    np.testing.assert_array_equal(l0, l1)  # the grain is not told
    inside = (c0 > 0.05) & (c0 < 0.95) & (c1 > 0) & (c1 < 1) & (n0 > 0) & (n0 < 1) & (n1 > 0) & (n1 < 1)
    added = c1 - c0  # grain in the target ...
    np.testing.assert_allclose((n1 - n0)[inside], added[inside], atol=1e-5)  # ... and the same in the input
    stds = np.array([a[m].std() for a, m in zip(added, inside) if m.sum() > 200])
    assert len(stds) > 8 and stds.max() <= 0.021 and stds.min() > 0 and len(np.unique(stds.round(4))) > 4
    (m0, d0, _), (m1, d1, _) = _grain_pair(0.5, batch_size=64, **lone)
    same = np.array([np.array_equal(a, b) for a, b in zip(d0, d1)])
    assert 0.3 < same.mean() < 0.7  # about half the patches get grain ...
    np.testing.assert_array_equal(m0[same], m1[same])  # ... the others are those of the run without it
    from models.training.card import describe_training

    assert describe_training(TrainConfig(grain_fraction=0.5, grain_max=0.02))["noise"].endswith(
        "; 50% of the references given grain of their own first (white or, half of them, kernel-shaped; std "
        "uniform in [0, 0.02]), in the target too and not told")
    assert "grain" not in describe_training(TrainConfig())["noise"]


def test_each_slice_of_a_volume_patch_gets_its_own_grain(volume_set):
    settings = dict(context=1, volumes_dir=str(volume_set), patch=48, batch_size=4, sigma_min=0.0, sigma_max=0.0,
                    kernel_fraction=0.0)
    (n0, c0, _), (n1, c1, _) = _grain_pair(**settings)
    grain = n1 - n0  # no noise added: the input's difference is the grain of each slice
    np.testing.assert_allclose(grain[:, 1:2][(c1 > 0) & (c1 < 1)], (c1 - c0)[(c1 > 0) & (c1 < 1)], atol=1e-5)
    for b in range(4):
        if grain[b].std() > 0:
            assert not np.allclose(grain[b, 0], grain[b, 1]) and not np.allclose(grain[b, 2], grain[b, 1])
    assert (grain.std(axis=(1, 2, 3)) > 0).any()


def test_the_real_sets_contiguous_runs_of_one_part_load_in_stack_order_and_feed_a_share_of_volume_patches(
        volume_set, tmp_path):
    from models.training import realct
    from tests.conftest import write_series

    root = tmp_path / "realct"
    run = np.zeros((3, 64, 64), np.int16)  # stored 0 -> -1024 HU
    for k in range(3):
        run[k, 8:56, 8:56] = 1024 + 1000 + 100 * k  # 1000, 1100, 1200 HU: far above every volume slice here
    # written with the slices out of stack order; one lone slice of another series beside it
    paths = write_series(root / "lidc_concept_to_clinic", run[::-1], z0=2.5, dz=-1.25, series="run",
                         names=["b.dcm", "a.dcm", "c.dcm"])
    paths += write_series(root / "lidc_concept_to_clinic", run[:1], series="lone", names=["lone.dcm"])
    paths += write_series(root / "dcmqi", run, series="held-out", names=["v0.dcm", "v1.dcm", "v2.dcm"])
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["file", "group", "terms", "pixel_mm"])
        w.writeheader()
        w.writerows({"file": str(p.relative_to(root)), "group": p.parent.name, "terms": "CC BY 3.0",
                     "pixel_mm": "0.7"} for p in paths)
    (vol,) = volumes.realct_part_runs("train", root)  # the lone slice and the validation source are not in it
    assert vol.series.startswith("lidc_concept_to_clinic/") and vol.terms == "CC BY 3.0" and vol.pixel_mm == 0.7
    np.testing.assert_allclose(vol.z_mm, [0.0, 1.25, 2.5])
    np.testing.assert_allclose(vol.hu[:, 32, 32], [1000, 1100, 1200])  # ordered along the stack
    assert [v.series.split("/")[0] for v in volumes.realct_part_runs("validation", root)] == ["dcmqi"]
    assert realct.SPLIT["train"][0] == "lidc_concept_to_clinic"
    with pytest.raises(ValueError, match="part must be one of"):
        volumes.realct_part_runs("tune", root)

    def centres(fraction):
        cfg = TrainConfig(context=1, volumes_dir=str(volume_set), realct_dir=str(root), runs_fraction=fraction,
                          patch=32, batch_size=24, sigma_min=0.0, sigma_max=0.0, window_low=-1000, window_high=1000)
        noisy, clean, _ = PatchStream(cfg).batch(3)
        c = clean.numpy()[:, 0]
        return ((c > 0.01) & (c < 0.99)).mean(axis=(1, 2)), noisy.numpy()
    from_runs = lambda grey: grey == 0  # noqa: E731 (a run's patch is air and 1000 HU or more, nothing between)
    none, before = centres(0.0)
    half, _ = centres(0.5)
    every, stacks = centres(1.0)
    assert not from_runs(none).any() and from_runs(every).all() and 0 < from_runs(half).sum() < len(half)
    # share 0: the batch that the code before runs_fraction drew for these settings (its sum, recorded then)
    assert float(before.astype(np.float64).sum()) == pytest.approx(42154.997494250536, rel=1e-9)
    assert stacks.shape == (24, 3, 32, 32)
    from models.training.card import describe_training

    words = describe_training(TrainConfig(context=2, source="volumes", runs_fraction=0.4))["data"]
    assert "40% of the volume patches cut instead from the contiguous runs of the real CT set's training part" in words
    assert "contiguous runs" not in describe_training(TrainConfig(context=2, source="volumes"))["data"]


def test_thinner_stacks_interpolate_between_the_volumes_slices_and_keep_gapped_or_short_volumes_as_stored(
        volume_set):
    from models.training.data import blend, thinner_positions

    (vol,) = volumes.load_part("validation", volume_set)  # z -9, -6, -3, 0 mm; 100 stored units apart
    t = thinner_positions(vol, 1, 1.5, 0.0)  # half a slice on each side, at the first end
    np.testing.assert_allclose(np.interp(t, np.arange(4), vol.z_mm), [-9.0, -7.5, -6.0])
    hu = blend(vol.hu, t)
    np.testing.assert_allclose(hu[1], (vol.hu[0] + vol.hu[1]) / 2, atol=1e-3)
    np.testing.assert_allclose(hu[[0, 2]], vol.hu[[0, 1]], atol=1e-3)
    np.testing.assert_array_equal(blend(vol.hu, t, np.s_[10:20, 30:50]), hu[:, 10:20, 30:50])  # a patch alone
    t = thinner_positions(vol, 1, 1.5, 1.0)  # at the other end: the last slice itself
    np.testing.assert_allclose(np.interp(t, np.arange(4), vol.z_mm), [-3.0, -1.5, 0.0])
    np.testing.assert_allclose(blend(vol.hu, t)[2], vol.hu[3], atol=1e-3)
    assert thinner_positions(vol, 2, 2.5, 0.5) is None  # 10 mm of stack asked of 9 mm
    gapped = volumes.Volume(vol.series, vol.hu, np.array([-9.0, -6.0, -3.0, 3.0]), vol.pixel_mm, vol.terms)
    assert thinner_positions(gapped, 1, 1.5, 0.5) is None


def test_a_share_of_volume_patches_comes_from_thinner_stacks_of_even_steps_in_the_asked_range(volume_set):
    slope = float(pydicom.dcmread(get_testdata_file("CT_small.dcm")).RescaleSlope)
    per_mm = 100 * slope / 3 / 2000  # unit-scale change per mm along the stack

    def steps(fraction):
        cfg = TrainConfig(context=1, volumes_dir=str(volume_set), source="volumes", thin_fraction=fraction,
                          patch=48, batch_size=16, sigma_min=0.0, sigma_max=0.0, window_low=-1000, window_high=1000)
        n = PatchStream(cfg).batch(1)[0].numpy().astype(np.float64)
        inside = (n[:, 1] > 0.05) & (n[:, 1] < 0.95)
        return (np.array([np.median((n[b, 1] - n[b, 0])[inside[b]]) for b in range(16)]) / per_mm,
                np.array([np.median((n[b, 2] - n[b, 1])[inside[b]]) for b in range(16)]) / per_mm)

    below, above = steps(1.0)  # mm between neighbours, from the HU they differ by
    np.testing.assert_allclose(below, above, atol=1e-3)  # an even step on both sides
    assert np.all((np.abs(below) >= 0.8 - 1e-3) & (np.abs(below) <= 2.0 + 1e-3)) and len(np.unique(below.round(3))) > 8
    stored, _ = steps(0.0)  # as stored: 3 mm apart, or the slice itself past an end
    assert set(np.abs(stored).round(3)) <= {0.0, 3.0}
    from models.training.card import describe_training

    words = describe_training(TrainConfig(context=2, source="volumes", thin_fraction=0.3))["data"]
    assert "30% of the patches of the volumes made thinner: stacks at a step of 0.8-2 mm" in words
