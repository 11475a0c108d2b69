import json

import numpy as np
import pytest
import torch

from models.autoencoder import DenoisingAutoencoder, count_parameters
from models.store import SHIPPED_WEIGHTS, ModelLoadError, card_path, load_checkpoint, load_model, save_model
from models.training.config import TrainConfig
from models.training.train import (
    LOG_MSE_EPS,
    build_model,
    describe_schedule,
    learning_rate,
    objective,
    schedules_from_log,
    train,
)


def test_autoencoder_is_fully_convolutional_and_residual():
    m = DenoisingAutoencoder(width=4, levels=2, convs_per_level=1)
    x = torch.rand(2, 1, 37, 50)
    assert m(x).shape == x.shape
    with torch.no_grad():
        m.head.weight.zero_()
        m.head.bias.zero_()
    torch.testing.assert_close(m(x), x)  # zero noise estimate -> identity
    with pytest.raises(ValueError):
        DenoisingAutoencoder(width=0)


def test_weights_round_trip_without_pickle(tmp_path, monkeypatch):
    torch.manual_seed(0)
    m = DenoisingAutoencoder(width=4, levels=1, convs_per_level=2)
    path = tmp_path / "w.safetensors"
    save_model(m, path, {"name": "t", "version": "9"})
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load (pickle) must not be used"))
    loaded = load_model(path)
    assert loaded.model.config == {"width": 4, "levels": 1, "convs_per_level": 2, "noise_map": False, "blocks": 0}
    assert path.read_bytes()[:8] != b"\x80\x02\x8a\x0alz"  # not a pickle archive
    x = torch.rand(1, 1, 16, 16)
    torch.testing.assert_close(loaded.model(x), m.eval()(x))
    card = json.loads(card_path(path).read_text())
    assert card["weights_sha256"] == loaded.sha256 and loaded.name == "t 9"


def test_tampered_or_missing_weights_are_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    save_model(DenoisingAutoencoder(width=4, levels=1), path, {"name": "t", "version": "1"})
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="differs from its model card"):
        load_model(path)
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "nope.safetensors")


TINY = dict(batch_size=4, patch=32, width=4, levels=1, convs_per_level=1, pool_size=2, pool_refresh=1000,
            val_slices=1, lr=3e-3)


@pytest.mark.parametrize(("loss", "drop"), [("mse", 0.8), ("log_mse", 0.9)])
def test_tiny_training_lowers_the_loss(tmp_path, loss, drop):
    cfg = TrainConfig(steps=60, checkpoint_every=20, val_every=60, loss=loss, **TINY)
    train(cfg, tmp_path, progress=False)
    rows = (tmp_path / "train_log.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[1]) for r in rows]
    assert len(losses) == 3 and losses[0] > losses[1] > losses[2] and losses[2] < drop * losses[0]  # logged: plain MSE
    assert float(rows[-1].split(",")[2]) > 20  # validation PSNR (dB) was measured


def test_log_mse_objective_weighs_every_patch_alike():
    per_patch = torch.tensor([1e-2, 1e-4])  # a high-noise and a low-noise patch
    assert objective(TrainConfig(), per_patch).item() == pytest.approx(0.00505)
    log_mse = objective(TrainConfig(loss="log_mse"), per_patch)
    assert log_mse.item() == pytest.approx((np.log(1e-2 + LOG_MSE_EPS) + np.log(1e-4 + LOG_MSE_EPS)) / 2)
    # halving either patch's error lowers the objective by the same amount (the PSNR gain is equal)
    gains = [log_mse.item() - objective(TrainConfig(loss="log_mse"), per_patch * torch.tensor(f)).item()
             for f in ([0.5, 1.0], [1.0, 0.5])]
    assert gains[0] == pytest.approx(gains[1], rel=0.02)
    with pytest.raises(ValueError, match="unknown loss 'l1'"):
        objective(TrainConfig(loss="l1"), per_patch)


def test_checkpoint_resumes_to_the_same_state(tmp_path):
    straight = TrainConfig(steps=12, checkpoint_every=6, val_every=1000, **TINY)
    train(straight, tmp_path / "a", progress=False)
    train(straight, tmp_path / "b", progress=False, until_step=5)  # interrupted after step 5
    assert (tmp_path / "b" / "train_log.csv").read_text().splitlines()[-1].startswith("5,")
    train(straight, tmp_path / "b", progress=False)  # resumes at step 5
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "a" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoint.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="another configuration"):
        train(TrainConfig(steps=12, **dict(TINY, lr=1e-4)), tmp_path / "a", progress=False)


def test_a_run_cut_off_before_its_first_log_row_gets_the_logs_header_when_rerun(tmp_path):
    """A run stopped before its first checkpoint leaves an empty train_log.csv; the rerun starts
    afresh and writes the header before its rows, so the export can read the log."""
    import csv

    cfg = TrainConfig(steps=4, checkpoint_every=2, val_every=1000, **TINY)
    (tmp_path / "train_log.csv").write_text("")
    train(cfg, tmp_path, progress=False, validate=False)
    rows = list(csv.DictReader(open(tmp_path / "train_log.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4] and all(float(r["loss"]) > 0 for r in rows)


def test_rows_logged_past_the_checkpoint_are_dropped_when_the_run_resumes(tmp_path):
    """A run stopped after logging a row but before saving its checkpoint: the rerun trains those
    steps again from the checkpoint and logs each step once, in order."""
    import csv

    cfg = TrainConfig(steps=6, checkpoint_every=2, val_every=1000, **TINY)
    train(cfg, tmp_path, progress=False, until_step=2, validate=False)
    log_csv = tmp_path / "train_log.csv"
    with open(log_csv, "a", newline="") as fh:  # the row of step 4, its checkpoint never saved
        csv.writer(fh).writerow([4, 9.9, "", 1e-3, 1.0])
    train(cfg, tmp_path, progress=False, validate=False)
    rows = list(csv.DictReader(open(log_csv)))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    assert float(rows[1]["loss"]) != 9.9  # step 4's row is the rerun's
    (tmp_path / "train_log.csv").write_text("step,psnr\n2,30\n")
    with pytest.raises(ValueError, match="train_log.csv: not a training log"):
        train(cfg, tmp_path, progress=False, validate=False)


def test_a_continued_run_records_its_warm_restart(tmp_path):
    import csv
    import dataclasses

    short = TrainConfig(steps=40, checkpoint_every=10, val_every=1000, **TINY)
    train(short, tmp_path, progress=False, until_step=30, validate=False)
    train(short, tmp_path, progress=False, validate=False)  # an interruption is no new schedule
    log_rows = lambda: list(csv.DictReader(open(tmp_path / "train_log.csv")))  # noqa: E731
    assert schedules_from_log(short, log_rows()) == [(0, 40)]
    assert describe_schedule(short, [(0, 40)], 40) == "Adam, lr 0.003 cosine to 1e-05, 4 warm-up steps"
    longer = dataclasses.replace(short, steps=100)
    train(longer, tmp_path, progress=False, validate=False)  # continued: a second cosine from step 40
    rows = log_rows()
    assert float(rows[4]["lr"]) == pytest.approx(learning_rate(longer, 49))  # the row at step 50
    assert float(rows[4]["lr"]) > float(rows[3]["lr"])  # the rate went back up
    schedules = schedules_from_log(longer, rows)
    assert schedules == [(0, 40), (40, 100)]
    assert describe_schedule(longer, schedules, 100) == (
        "Adam, lr 0.003 cosine to 1e-05, warm restarts: steps 0-40 on a schedule of 40 steps (4 warm-up); "
        f"steps 40-100 on a schedule of 100 steps (10 warm-up), resumed at lr {learning_rate(longer, 40):.3g}")
    rows[4]["lr"] = "0.5"  # a rate no schedule gives: said, not dropped
    assert schedules_from_log(longer, rows) == [(0, 40), (40, None), (50, 100)]
    other = dataclasses.replace(longer, lr=1e-4)  # a log no schedule of this config made
    assert schedules_from_log(other, rows) == [(0, None)]
    assert describe_schedule(other, [(0, None)], 100).endswith(
        "(the logged rates fit no schedule of this configuration)")


def test_shipped_weights_load_and_reproduce_their_card():
    from models.training import realct
    from models.training.card import measure, phantom_check_set
    from models.training.data import real_references

    loaded = load_model(SHIPPED_WEIGHTS)
    card = loaded.card
    weights_dir = SHIPPED_WEIGHTS.parent
    assert sum(p.stat().st_size for p in weights_dir.rglob("*.safetensors")) <= 10 * 2**20  # the repository stays lean
    assert card["architecture"]["parameters"] == count_parameters(loaded.model)
    assert card["window_hu"] == [-1000.0, 1000.0]
    assert card["training"]["targets"].startswith("the reference without the added noise")  # never noisy-to-noisy
    assert loaded.model.noise_map and "noise-level map" in card["training"]["noise"]
    cfg = TrainConfig(**{k: v for k, v in card["training"]["config"].items()})
    assert cfg.source == "realct" and {g["group"] for g in card["training"]["sources"]} == set(realct.SPLIT["train"])
    assert all("terms" in g and g["scanners"] for g in card["training"]["sources"])  # attributions
    table = measure(loaded.model, phantom_check_set(cfg), sigmas=(0.07,))["0.07"]
    claimed = card["evaluation"]["phantoms"]["by_sigma"]["0.07"]
    assert table["autoencoder"]["psnr_db"] == pytest.approx(claimed["autoencoder"]["psnr_db"], abs=0.05)
    assert table["nlm"]["psnr_db"] == pytest.approx(claimed["nlm"]["psnr_db"], abs=0.05)
    assert table["autoencoder"]["psnr_db"] > max(table[m]["psnr_db"] for m in ("gaussian", "average", "median",
                                                                               "bilateral", "nlm"))
    if realct.available(cfg.realct_dir):  # where the real CT set lies (as in CI), its figures too
        real = measure(loaded.model, real_references(cfg, "validation"), sigmas=(0.07,))["0.07"]
        assert real["autoencoder"]["psnr_db"] == pytest.approx(
            card["evaluation"]["real_validation"]["by_sigma"]["0.07"]["autoencoder"]["psnr_db"], abs=0.05)


def test_training_from_a_site_archive_uses_its_slices_and_plots_curves(tmp_path):
    from models.training.data import PatchStream
    from tests.conftest import SAMPLES

    cfg = TrainConfig(steps=4, checkpoint_every=2, val_every=4, source=str(SAMPLES / "abdomen"), **TINY)
    stream = PatchStream(cfg)
    noisy, clean, level = stream.batch(0)
    pool = stream._fixed_pool()
    assert len(pool) == 2 and pool[0].unit.shape == (512, 512)  # pool_size slices of the archive
    assert pool[0].pixel_mm == pytest.approx(0.742188) and level.shape == (4,)
    assert clean.shape == (4, 1, 32, 32) and float((noisy - clean).abs().max()) > 0
    train(cfg, tmp_path, progress=False)
    png = (tmp_path / "loss_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_a_new_run_can_start_from_existing_weights(tmp_path):
    from models.store import load_model

    first = TrainConfig(steps=6, checkpoint_every=6, val_every=1000, **TINY)
    train(first, tmp_path / "a", progress=False)
    from models.training.card import export

    export(first, tmp_path / "a", tmp_path / "a.safetensors")
    cont = TrainConfig(steps=1, checkpoint_every=1, val_every=1000, init_weights=str(tmp_path / "a.safetensors"),
                       **dict(TINY, lr=1e-12))
    train(cont, tmp_path / "b", progress=False)
    start = load_model(tmp_path / "a.safetensors").model.state_dict()
    from safetensors.torch import load_file

    after = {k[6:]: v for k, v in load_file(str(tmp_path / "b" / "checkpoint.safetensors")).items() if k.startswith("model.")}
    for k in start:  # one step at a negligible learning rate: still the initial weights
        torch.testing.assert_close(after[k], start[k], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="architecture"):
        train(TrainConfig(steps=1, init_weights=str(tmp_path / "a.safetensors"), **dict(TINY, width=8)),
              tmp_path / "c", progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_cuda_resumes_on_the_cpu(tmp_path):
    train(TrainConfig(steps=4, checkpoint_every=2, val_every=4, **TINY), tmp_path, progress=False, until_step=2,
          device="cuda")
    last = train(TrainConfig(steps=4, checkpoint_every=2, val_every=4, **TINY), tmp_path, progress=False)
    assert last["step"] == 4 and np.isfinite(last["loss"])


def test_a_grown_network_computes_what_the_smaller_one_did():
    from models.autoencoder import grow_state

    torch.manual_seed(3)
    small = DenoisingAutoencoder(width=4, levels=2, convs_per_level=1).eval()
    big = DenoisingAutoencoder(width=4, levels=2, convs_per_level=1, noise_map=True, blocks=2).eval()
    big.load_state_dict(grow_state(small.state_dict(), big))
    x = torch.rand(2, 1, 24, 20)
    with torch.no_grad():
        torch.testing.assert_close(big(x, torch.tensor([0.02, 0.1])), small(x))  # zero map weights, identity blocks
    # once trained, the level matters: the map's weights are no longer zero
    with torch.no_grad():
        big.stem[0][0].weight[:, 1].fill_(0.5)
        assert not torch.allclose(big(x, 0.02), big(x, 0.1))
    with pytest.raises(ValueError, match="does not fit"):
        grow_state(DenoisingAutoencoder(width=8, levels=2, convs_per_level=1).state_dict(), big)
    with pytest.raises(ValueError, match="pass sigma"):
        big(x)


def test_a_noise_conditioned_network_round_trips_with_its_architecture(tmp_path):
    torch.manual_seed(0)
    m = DenoisingAutoencoder(width=4, levels=1, convs_per_level=1, noise_map=True, blocks=1)
    save_model(m, tmp_path / "c.safetensors", {"name": "c", "version": "1"})
    loaded = load_model(tmp_path / "c.safetensors")
    assert loaded.model.config == {"width": 4, "levels": 1, "convs_per_level": 1, "noise_map": True, "blocks": 1}
    x = torch.rand(1, 1, 8, 8)
    torch.testing.assert_close(loaded.model(x, 0.05), m.eval()(x, 0.05))


def test_a_noise_level_map_is_the_level_pixel_by_pixel():
    torch.manual_seed(0)
    m = DenoisingAutoencoder(width=4, levels=2, convs_per_level=1, noise_map=True, blocks=1, context=1).eval()
    x = torch.rand(2, 3, 37, 50)  # not a multiple of 4: the map is padded as the slices are
    with torch.no_grad():
        flat = torch.tensor([0.03, 0.08]).reshape(2, 1, 1, 1).expand(2, 1, 37, 50)
        torch.testing.assert_close(m(x, flat), m(x, torch.tensor([0.03, 0.08])))
        varied = flat.clone()
        varied[:, :, :, 25:] = 0.12
        out = m(x, varied) - m(x, flat)
    assert out[..., :18].abs().max() < out[..., 40:].abs().max()  # the change follows the map's half
    assert out[..., 40:].abs().max() > 1e-4
    with pytest.raises(ValueError, match=r"noise-level map must be \(2, 1, 37, 50\)"):
        m(x, torch.zeros(2, 1, 36, 50))


def test_batches_made_by_workers_are_the_batches_of_one_process():
    from models.training.batches import Batches
    from models.training.data import PatchStream

    cfg = TrainConfig(lowdose_fraction=0.3, kernel_fraction=0.3, **TINY)
    with Batches(PatchStream(cfg), 3, 11, workers=2, ahead=2) as batches:
        made = list(batches)
    alone = PatchStream(cfg)
    assert len(made) == 8
    for step, batch in zip(range(3, 11), made):
        for a, b in zip(batch, alone.batch(step)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(made[0][0], made[1][0])  # each step its own batch
    with Batches(PatchStream(cfg), 5, 6, workers=2) as one:  # the parent's own first batch, no worker's
        (only,) = list(one)
    for a, b in zip(only, alone.batch(5)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="workers must be 0 or more"):
        Batches(alone, 0, 1, workers=-1)


def test_a_run_made_with_workers_is_the_run_made_without(tmp_path, caplog):
    from safetensors.torch import load_file

    cfg = TrainConfig(steps=8, checkpoint_every=4, val_every=4, **TINY)
    with caplog.at_level("INFO", logger="models.training.train"):
        train(cfg, tmp_path / "a", progress=False)
        assert "resumed" not in caplog.text  # a new run
        train(cfg, tmp_path / "b", progress=False, until_step=2, validate=False)
        train(cfg, tmp_path / "b", progress=False, workers=2, until_step=4, validate=False)  # resumed by workers
    assert caplog.text.count("resumed") == 1 and "at step 2" in caplog.text
    train(cfg, tmp_path / "b", progress=False, workers=2, validate=False)
    a = load_file(str(tmp_path / "a" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoint.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    rows_a = (tmp_path / "a" / "train_log.csv").read_text().splitlines()[1:]
    rows_b = (tmp_path / "b" / "train_log.csv").read_text().splitlines()[1:]
    assert [r.split(",")[2] != "" for r in rows_a] == [True, True]  # validated at 4 and 8
    assert [r.split(",")[2] for r in rows_b] == ["", "", ""]  # not asked to validate
    assert [float(r.split(",")[1]) for r in rows_a][-1] == pytest.approx(float(rows_b[-1].split(",")[1]), rel=1e-5)
    # the run's record of where its steps ran, in order, for the model card
    opt = torch.optim.Adam(build_model(cfg).parameters())
    assert load_checkpoint(tmp_path / "a" / "checkpoint.safetensors", build_model(cfg), opt)["trained_on"] == ["cpu"]
    meta = load_checkpoint(tmp_path / "b" / "checkpoint.safetensors", build_model(cfg), opt)
    assert meta["trained_on"] == ["cpu", "cpu, 2 batch workers"]
