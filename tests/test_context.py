"""Slice context (pipeline/inference/slice_context.py, the 2.5-D network and the Denoiser's stacks): which neighbours
each slice gets, the explicit fallbacks at ends and breaks, and chunks that denoise as the whole."""
import math

import numpy as np
import pytest
import torch

from models.autoencoder import DenoisingAutoencoder, grow_state
from models.store import load_model, save_model
from pipeline.errors import ConfigError
from pipeline.inference.denoiser import Denoiser
from pipeline.inference.slice_context import MAX_STEP_MM, context_indices, neighbour_links
from pipeline.inference.window import Window


def test_links_follow_the_regular_step_and_break_at_gaps_uneven_steps_and_repeats():
    assert neighbour_links([0, 1, 2, 3], 4).tolist() == [True, True, True]
    assert neighbour_links([0, -1.25, -2.5], 3).tolist() == [True, True]  # either direction
    assert neighbour_links([0, 1, 2, 5, 6], 5).tolist() == [True, True, False, True]  # a gap
    assert neighbour_links([0, 1, 2, 2, 3], 5).tolist() == [True, True, False, True]  # a repeated position
    assert neighbour_links([0, 1, 1.5, 2.5], 4).tolist() == [True, False, True]  # an uneven step
    assert neighbour_links(None, 3).tolist() == [False, False]  # unknown geometry: no neighbours
    assert neighbour_links([7.0], 1).tolist() == []
    assert neighbour_links([0, 4.5, 9.0], 3).tolist() == [True, True]  # up to the maximum step
    assert neighbour_links([0, 5, 10, 15], 4).tolist() == [False, False, False]  # thick slices: none
    assert neighbour_links([0, 5, 10], 3, max_step_mm=math.inf).tolist() == [True, True]
    with pytest.raises(ValueError, match="expected 3 slice positions"):
        neighbour_links([0, 1], 3)


def test_neighbours_are_replicated_past_the_ends_and_across_breaks_never_shifted():
    idx = context_indices(5, 2, np.array([True, True, False, True]))
    assert idx.tolist() == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 2], [0, 1, 2, 2, 2], [3, 3, 3, 4, 4], [3, 3, 4, 4, 4]]
    assert context_indices(1, 2, np.zeros(0, bool)).tolist() == [[0, 0, 0, 0, 0]]  # one slice: only itself
    assert context_indices(3, 0, np.ones(2, bool)).tolist() == [[0], [1], [2]]
    with pytest.raises(ValueError, match="expected 2 links for 3 slices"):
        context_indices(3, 1, np.ones(3, bool))


def _context_model(tmp_path, context=1, noise_map=True):
    torch.manual_seed(3)
    model = DenoisingAutoencoder(width=4, levels=1, convs_per_level=1, noise_map=noise_map, context=context)
    for p in model.parameters():  # an untrained network whose output depends on every input channel
        torch.nn.init.normal_(p, std=0.2)
    path = tmp_path / "ctx.safetensors"
    save_model(model, path, {"name": "ctx-test", "version": "0.0.1", "window_hu": [-1000, 1000]})
    return load_model(path)


def test_a_context_model_round_trips_and_rejects_a_stack_of_the_wrong_depth(tmp_path):
    loaded = _context_model(tmp_path, context=2)
    assert loaded.model.context == 2 and loaded.model.config["context"] == 2 and loaded.card["architecture"]["context"] == 2
    assert loaded.model(torch.rand(2, 5, 16, 16), 0.05).shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="expected 5 slice channel\\(s\\) \\(context 2\\), got 1"):
        loaded.model(torch.rand(2, 1, 16, 16), 0.05)
    assert "context" not in DenoisingAutoencoder().config  # 2-D cards stay as they were


def test_each_slice_is_given_its_own_neighbours_in_stack_order(tmp_path):
    loaded = _context_model(tmp_path)
    seen = []
    forward = loaded.model.forward
    loaded.model.forward = lambda x, s: seen.append(x.clone()) or forward(x, s)
    images = np.stack([np.full((8, 8), k / 10, np.float32) for k in range(4)])
    Denoiser(loaded, "cpu", batch_size=3).denoise_unit(images, 0.05, links=np.array([True, False, True]))
    given = torch.cat(seen)[:, :, 0, 0].numpy() * 10
    np.testing.assert_allclose(given, [[0, 0, 1], [0, 1, 1], [2, 2, 3], [2, 3, 3]], atol=1e-5)


def test_a_chunk_with_its_neighbours_denoises_as_the_whole_stack(tmp_path):
    """What a streamed series relies on: slices a..b given with their neighbours on each side come out
    exactly as when the whole stack is denoised at once."""
    den = Denoiser(_context_model(tmp_path), "cpu", batch_size=2)
    images = np.random.default_rng(0).random((7, 16, 16)).astype(np.float32)
    whole = den.denoise_unit(images, 0.05)
    part = den.denoise_unit(images[1:6], 0.05, span=(1, 4))  # slices 2..4 of the stack, neighbours 1 and 5
    np.testing.assert_allclose(part, whole[2:5], atol=1e-6)
    alone = den.denoise_unit(images[2:5], 0.05)  # without them the chunk's ends see replicated slices
    assert np.abs(alone[0] - whole[2]).max() > 1e-4


def test_a_2d_model_grown_into_a_context_model_computes_the_same_until_trained(tmp_path):
    torch.manual_seed(1)
    flat = DenoisingAutoencoder(width=4, levels=1, convs_per_level=1, noise_map=True)
    for p in flat.parameters():
        torch.nn.init.normal_(p, std=0.2)
    grown = DenoisingAutoencoder(width=4, levels=1, convs_per_level=1, noise_map=True, context=2)
    grown.load_state_dict(grow_state(flat.state_dict(), grown))
    x = torch.rand(3, 5, 16, 16)
    torch.testing.assert_close(grown(x, 0.05), flat(x[:, 2:3], 0.05))


def test_the_series_path_refuses_a_context_model_without_neighbour_links(tmp_path):
    den = Denoiser(_context_model(tmp_path), "cpu", strength="20")
    hu = np.zeros((3, 16, 16), np.float32)
    with pytest.raises(ConfigError, match="takes 1 neighbouring slice\\(s\\) on each side: the slices' neighbour links"):
        den.denoise_hu(hu, Window())
    assert den.denoise_hu(hu, Window(), links=neighbour_links([0, 1, 2], 3)).shape == (3, 16, 16)


@pytest.mark.parametrize(("context", "chunk"), [(1, 4), (2, 1)])
def test_a_streamed_series_gives_each_slice_its_real_neighbours_and_reads_each_chunk_once(
        tmp_path, series_writer, monkeypatch, context, chunk):
    """Chunk by chunk, with the previous chunk's last slices kept and the next chunk's first slices
    borrowed from its (single) read, the derived series equals the whole stack denoised at once with
    its neighbour links; a gap in the stack breaks the link there."""
    import json

    import pydicom

    from pipeline.dicom.discovery import scan
    from pipeline.dicom.reader import SeriesPlan, load_series
    from pipeline.dicom.writer import stack_to_stored
    from pipeline.settings import Settings
    from pipeline.study_run import QA_CONTEXT, process_scan

    torch.manual_seed(2)
    model = DenoisingAutoencoder(width=4, levels=1, convs_per_level=1, context=context)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    path = tmp_path / "ctx.safetensors"
    save_model(model, path, {"name": "ctx-test", "version": "0.0.1", "window_hu": [-1000, 1000]})
    den = Denoiser(load_model(path), "cpu", batch_size=3)
    volume = np.random.default_rng(5).integers(900, 1200, (11, 24, 24)).astype(np.uint16)
    series_writer(tmp_path / "in" / "a", volume[:6], dz=2.0)
    series_writer(tmp_path / "in" / "a", volume[6:], z0=17.0, dz=2.0, index_offset=6,
                  names=[f"late{k}.dcm" for k in range(5)])  # a 5 mm gap after slice 5
    reads = []
    original = SeriesPlan.read
    monkeypatch.setattr(SeriesPlan, "read", lambda self, a, b: reads.append((a, b)) or original(self, a, b))
    settings = Settings(progress=False, chunk_slices=chunk, prefetch_chunks=1, qa_every=4)
    (outcome,) = process_scan(scan(tmp_path / "in"), tmp_path / "out", settings, den)
    step = max(chunk, context)
    assert reads == [(a, min(a + step, 11)) for a in range(0, 11, step)]  # every slice read once, in order
    (series,) = outcome.series
    folder = outcome.folder / series.derived_series_uid
    out = np.stack([ds.pixel_array for ds in sorted((pydicom.dcmread(f) for f in folder.glob("*.dcm")),
                                                    key=lambda d: float(d.ImagePositionPatient[2]))])
    ref = load_series(next(iter(scan(tmp_path / "in").studies.values())).series.popitem()[1])
    links = neighbour_links([float(d.ImagePositionPatient[2]) for d in ref.datasets], 11)
    assert links.tolist() == [True] * 5 + [False] + [True] * 4
    whole = den.denoise_hu(ref.hu, settings.window, links=links)
    np.testing.assert_array_equal(out, np.stack(stack_to_stored(whole, ref.hu, ref.datasets)))
    prov = json.loads((folder / "provenance.json").read_text())
    assert prov["slice_context"] == {"neighbours_each_side": context, "linked_steps": 9, "steps": 10, "step_mm": 2.0,
                                     "max_step_mm": MAX_STEP_MM, "qa": QA_CONTEXT}


def test_the_qa_runs_a_context_model_on_each_scored_slice_with_its_real_noisy_neighbours(tmp_path, series_writer):
    """What the QA rows measure is what the derived series does: each scored slice is denoised with its
    linked neighbours (none across a gap, repeated at the ends), each neighbour a noisy copy of its own
    seeded from its own UID: the scores are those of the whole series' noisy copies denoised as a
    derived series is (both rows), not of the scored slices alone."""
    import csv

    from pipeline.dicom.discovery import scan
    from pipeline.dicom.reader import load_series
    from pipeline.inference.noise_level import estimate_series
    from pipeline.inference.window import hu_to_unit, unit_to_hu
    from pipeline.qa.metrics import psnr
    from pipeline.qa.noise import seed_from_uid
    from pipeline.settings import Settings
    from pipeline.study_run import FULL, delivered_model, process_scan

    den = Denoiser(_context_model(tmp_path, context=2), "cpu", batch_size=3)
    volume = np.random.default_rng(6).integers(900, 1200, (11, 40, 40)).astype(np.uint16)
    series_writer(tmp_path / "in" / "a", volume[:6], dz=2.0)
    series_writer(tmp_path / "in" / "a", volume[6:], z0=17.0, dz=2.0, index_offset=6,
                  names=[f"late{k}.dcm" for k in range(5)])  # a 5 mm gap after slice 5
    settings = Settings(progress=False, chunk_slices=3, prefetch_chunks=1, qa_every=4)
    (outcome,) = process_scan(scan(tmp_path / "in"), tmp_path / "out", settings, den)
    ref = load_series(next(iter(scan(tmp_path / "in").studies.values())).series.popitem()[1])
    links = neighbour_links([float(d.ImagePositionPatient[2]) for d in ref.datasets], 11)
    keys, window, sample = [str(d.SOPInstanceUID) for d in ref.datasets], settings.window, [2, 6, 10]
    pixel_mm = float(ref.datasets[0].PixelSpacing[0])
    copies = [settings.noise_model.noisy(hu_to_unit(h, window), h, window.width, pixel_mm, seed_from_uid(k))
              for h, k in zip(ref.hu, keys)]
    noisy, sigma = np.stack([c[0] for c in copies]), np.array([c[1] for c in copies], np.float32)
    estimate = estimate_series(list(unit_to_hu(noisy[sample], window)))  # the scored copies' estimate
    rows = {(r["sop_instance_uid"], r["method"]): float(r["psnr_db"])
            for r in csv.DictReader((outcome.folder / "qa_slices.csv").open())}
    expected = {"autoencoder": hu_to_unit(den.denoise_hu(unit_to_hu(noisy, window), window, estimate, strength=FULL,
                                                         links=links), window),
                "autoencoder_told": den.denoise_unit(np.clip(noisy, 0, 1), sigma, links=links)}
    alone = delivered_model(den, window, [])(noisy[sample], estimate)  # each scored slice without neighbours
    for k, i in enumerate(sample):
        reference = np.clip(hu_to_unit(ref.hu[i], window), 0, 1)
        for method, out in expected.items():
            assert rows[keys[i], method] == pytest.approx(psnr(reference, np.clip(out[i], 0, 1)), abs=2e-4)
        assert abs(rows[keys[i], "autoencoder"] - psnr(reference, np.clip(alone[k], 0, 1))) > 0.01


def test_slices_farther_apart_than_the_maximum_step_are_denoised_alone(tmp_path, series_writer, caplog):
    """Thick slices (5 mm steps, more than MAX_STEP_MM): no slice gets neighbours; the derived series
    is each slice denoised as a one-slice series, and the log and provenance say why."""
    import json
    import logging

    import pydicom

    from pipeline.dicom.discovery import scan
    from pipeline.dicom.reader import load_series
    from pipeline.dicom.writer import stack_to_stored
    from pipeline.settings import Settings
    from pipeline.study_run import process_scan

    den = Denoiser(_context_model(tmp_path, context=1, noise_map=False), "cpu", batch_size=3)  # blind: no estimate
    volume = np.random.default_rng(6).integers(900, 1200, (4, 24, 24)).astype(np.uint16)
    series_writer(tmp_path / "in" / "a", volume, dz=5.0)
    settings = Settings(progress=False, qa_every=4)
    with caplog.at_level(logging.INFO, logger="pipeline.study_run"):
        (outcome,) = process_scan(scan(tmp_path / "in"), tmp_path / "out", settings, den)
    (series,) = outcome.series
    folder = outcome.folder / series.derived_series_uid
    out = np.stack([ds.pixel_array for ds in sorted((pydicom.dcmread(f) for f in folder.glob("*.dcm")),
                                                    key=lambda d: float(d.ImagePositionPatient[2]))])
    ref = load_series(next(iter(scan(tmp_path / "in").studies.values())).series.popitem()[1])
    alone = np.concatenate([den.denoise_hu(ref.hu[k:k + 1], settings.window, links=np.zeros(0, bool))
                            for k in range(4)])
    np.testing.assert_array_equal(out, np.stack(stack_to_stored(alone, ref.hu, ref.datasets)))
    linked = den.denoise_hu(ref.hu, settings.window, links=np.ones(3, bool))
    assert not np.array_equal(np.stack(stack_to_stored(linked, ref.hu, ref.datasets)), out)  # neighbours would count
    prov = json.loads((folder / "provenance.json").read_text())["slice_context"]
    assert (prov["linked_steps"], prov["steps"], prov["step_mm"], prov["max_step_mm"]) == (0, 3, 5.0, MAX_STEP_MM)
    assert "0 of 3 steps between slices are neighbours (slices 5 mm apart, more than 4.5 mm: each slice alone)" \
        in caplog.text


def test_the_context_bench_averages_thick_slices_and_runs_a_model_without_its_neighbours(tmp_path):
    from bench.context import model_method, thick_volume
    from models.training.volumes import Volume

    rng = np.random.default_rng(0)
    vol = Volume("v", rng.normal(0, 100, (7, 16, 16)).astype(np.float32), np.arange(7) * 3.27, 1.0, "t")
    thick = thick_volume(vol, 2)
    assert thick.hu.shape == (3, 16, 16)  # the seventh slice, a run of one, is dropped
    np.testing.assert_allclose(thick.hu[1], (vol.hu[2] + vol.hu[3]) / 2, atol=1e-4)
    np.testing.assert_allclose(thick.z_mm, [1.635, 8.175, 14.715])
    with pytest.raises(ValueError, match="v: 7 slices, fewer than 8"):
        thick_volume(vol, 8)
    den = Denoiser(_context_model(tmp_path, context=1), "cpu")
    noisy = (vol.hu[:3] + 1000) / 2000
    alone = model_method(den, 0.05, neighbours=False)(noisy, thick)
    for k in range(3):  # without neighbours each slice is denoised as a one-slice series
        one = Volume("v", thick.hu[k:k + 1], thick.z_mm[k:k + 1], 1.0, "t")
        np.testing.assert_allclose(alone[k], model_method(den, 0.05)(noisy[k:k + 1], one)[0], atol=1e-5)
    assert np.abs(model_method(den, 0.05)(noisy, thick)[1] - alone[1]).max() > 1e-3  # the neighbours count


def test_the_context_bench_reads_a_real_ct_sources_contiguous_slices_as_volumes(tmp_path, series_writer):
    from bench.context import realct_volumes

    volume = np.random.default_rng(7).integers(900, 1200, (3, 16, 16)).astype(np.uint16)
    series_writer(tmp_path / "grp" / "a", volume[::-1], z0=-3.0, dz=1.0, series="1.2.3")  # written top down
    series_writer(tmp_path / "grp" / "b", volume[:1], series="1.2.4")  # a lone slice: not a volume
    (vol,) = realct_volumes("grp", str(tmp_path))
    assert vol.series.startswith("grp/") and vol.pixel_mm == pytest.approx(0.7)
    assert np.abs(np.diff(vol.z_mm)).tolist() == [1.0, 1.0]
    order = np.argsort(vol.z_mm)  # the reader's stack order, as the pipeline reads the series
    np.testing.assert_array_equal(vol.hu[order], volume[::-1].astype(np.float32) - 1024)
    with pytest.raises(ValueError, match="grp/b: no series of several slices"):
        realct_volumes("grp/b", str(tmp_path))


def test_the_context_bench_runs_a_model_told_nothing_as_the_derived_series_does(tmp_path, tiny_conditioned_model):
    """``--untold``: a 2-D model gives what the QA report's delivered model gives; a context model
    the same estimate and strength with the pipeline's neighbours (given no links or stacks, the QA's
    function denoises each copy alone)."""
    from bench.context import delivered_method
    from models.training.volumes import Volume
    from pipeline.inference.noise_level import estimate_series
    from pipeline.inference.window import unit_to_hu
    from pipeline.study_run import FULL, delivered_model

    rng = np.random.default_rng(8)
    hu = rng.normal(40, 30, (3, 32, 32)).astype(np.float32)
    vol = Volume("v", hu, np.array([0.0, 2.0, 4.0]), 0.7, "t")
    noisy = (hu + rng.normal(0, 60, hu.shape).astype(np.float32) + 1000) / 2000
    den = Denoiser(tiny_conditioned_model, "cpu")
    np.testing.assert_allclose(delivered_method(den)(noisy, vol), delivered_model(den, Window(), [])(noisy), atol=1e-6)
    ctx = Denoiser(_context_model(tmp_path, context=1), "cpu")
    noisy_hu = unit_to_hu(noisy, Window())
    linked = ctx.denoise_hu(noisy_hu, Window(), estimate_series(list(noisy_hu)), strength=FULL,
                            links=np.ones(2, bool))
    ours = delivered_method(ctx)(noisy, vol)
    np.testing.assert_allclose(ours, (linked + 1000) / 2000, atol=1e-5)
    assert np.abs(ours - delivered_model(ctx, Window(), [])(noisy)).max() > 1e-3  # given no links: each alone


def test_a_first_layer_spread_over_the_stack_keeps_a_lone_slice_and_averages_a_real_stack():
    from models.autoencoder import spread_slices

    torch.manual_seed(2)
    net = DenoisingAutoencoder(width=4, levels=1, convs_per_level=1, noise_map=True, context=2).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    shares = [0.05, 0.15, 0.6, 0.15, 0.05]
    spread = DenoisingAutoencoder(width=4, levels=1, convs_per_level=1, noise_map=True, context=2).eval()
    spread.load_state_dict(spread_slices(net.state_dict(), net, shares))
    before, after = net.stem[0][0].weight.detach(), spread.stem[0][0].weight.detach()
    centre = before[:, 2]
    torch.testing.assert_close(after[:, 2], 0.6 * centre)
    for k, share in ((0, 0.05), (1, 0.15), (3, 0.15), (4, 0.05)):
        torch.testing.assert_close(after[:, k], before[:, k] + share * centre)  # added to what the channel had
    torch.testing.assert_close(after[:, 5], before[:, 5])  # the noise-level channel as it was
    lone = torch.rand(2, 1, 16, 16).repeat(1, 5, 1, 1)  # a lone slice: its own neighbours
    with torch.no_grad():
        torch.testing.assert_close(spread(lone, 0.05), net(lone, 0.05), rtol=1e-5, atol=1e-6)
        stack = torch.rand(2, 5, 16, 16)
        assert float((spread(stack, 0.05) - net(stack, 0.05)).abs().max()) > 1e-3  # a real stack: not the same
    with pytest.raises(ValueError, match="3 slice shares for a stack of 5 slices"):
        spread_slices(net.state_dict(), net, [0.25, 0.5, 0.25])
    with pytest.raises(ValueError, match="at least 0 and sum to 1"):
        spread_slices(net.state_dict(), net, [0.1, 0.2, 0.6, 0.2, 0.1])
    flat = DenoisingAutoencoder(width=4, levels=1, convs_per_level=1, noise_map=True)
    with pytest.raises(ValueError, match="needs a network with slice context"):
        spread_slices(flat.state_dict(), flat, [1.0])


def test_slice_shares_are_checked_when_the_settings_are_read():
    from models.training.config import TrainConfig

    cfg = TrainConfig(context=1, init_weights="start.safetensors", init_slice_shares="0.25, 0.5, 0.25")
    assert cfg.slice_shares == [0.25, 0.5, 0.25] and TrainConfig().slice_shares == []
    with pytest.raises(ValueError, match="5 shares for a stack of 3 slices"):
        TrainConfig(context=1, init_weights="s", init_slice_shares="0.1,0.1,0.6,0.1,0.1")
    with pytest.raises(ValueError, match="summing to 1"):
        TrainConfig(context=1, init_weights="s", init_slice_shares="0.3,0.5,0.3")
    with pytest.raises(ValueError, match="not a list of numbers"):
        TrainConfig(context=1, init_weights="s", init_slice_shares="0.25,half,0.25")
