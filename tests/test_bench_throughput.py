"""bench.throughput and bench.memory on a thick-slice series: the generated series' spacing, and
the model-alone timing running the network the pipeline would run (stacks, or lone slices)."""
import numpy as np
import pydicom

from bench.throughput import model_alone
from models.store import load_model, save_model
from pipeline.inference.denoiser import Denoiser
from pipeline.inference.slice_context import neighbour_links
from pipeline.synthetic.samples import generate, long_study
from tests.test_lone import _pair


def test_the_long_series_is_generated_at_the_spacing_asked_and_links_as_stacks_only_at_1_mm(tmp_path):
    for spacing, linked in ((1.0, True), (5.0, False)):
        files = generate(tmp_path / f"{spacing:g}", (long_study(3, spacing_mm=spacing),))
        z = sorted(float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files)
        assert np.diff(z).tolist() == [spacing, spacing]
        assert {float(pydicom.dcmread(f, stop_before_pixels=True).SliceThickness) for f in files} == {spacing}
        assert neighbour_links(z, 3).tolist() == [linked, linked]


def test_model_alone_runs_the_lone_network_on_unlinked_slices_and_the_stacks_network_on_linked_ones(tmp_path):
    _, _, both = _pair(context=1)
    save_model(both, tmp_path / "pair.safetensors", {"name": "pair", "version": "0.1"})
    den = Denoiser(load_model(tmp_path / "pair.safetensors"), device="cpu", batch_size=2)
    seen = []
    den.loaded.model.lone.register_forward_hook(lambda mod, args, out: seen.append(out.shape[0]))
    model_alone(den, 3, np.zeros(2, bool))
    assert sum(seen) == 2 + 3  # the warm-up batch of 2, then the 3 slices: all through the lone network
    seen.clear()
    model_alone(den, 3, np.ones(2, bool))
    assert seen == []


def test_the_throughput_table_is_recorded_in_the_measured_weights_card_and_only_there(tmp_path):
    import json

    import pytest

    from bench import throughput

    _, _, both = _pair(context=1)
    weights = tmp_path / "pair.safetensors"
    save_model(both, weights, {"name": "pair", "version": "0.1", "window_hu": [-1000, 1000],
                               "evaluation": {"real_ct": {"kept": 1}}})
    card = weights.with_suffix(".json")
    args = ["--slices", "3", "--model-slices", "2", "--slice-spacing", "5", "--weights", str(weights),
            "--workdir", str(tmp_path), "--card", str(card)]
    figures = throughput.main(args)
    got = json.loads(card.read_text())["evaluation"]
    assert got["real_ct"] == {"kept": 1}  # the card's other figures kept
    entry = got["throughput"]["5 mm apart"]
    assert entry["series"] == "3 generated 512x512 slices, 2 of the 2 model-alone slices run alone"
    assert entry["seconds_per_slice"]["model alone"] == pytest.approx(figures["model alone"], abs=1e-4)
    assert entry["command"] == "python -m bench.throughput " + " ".join(args)

    other = tmp_path / "other.json"  # another model's card
    other.write_text(json.dumps({**json.loads(card.read_text()), "weights_sha256": "0" * 64}))
    before = other.read_text()
    with pytest.raises(SystemExit, match="other.json: the card of weights 0000000000000000, not of the weights"):
        throughput.main([*args[:-1], str(other)])
    assert other.read_text() == before


def test_the_memory_figures_are_recorded_in_the_shipped_cards_copy_and_not_for_a_tiny_model(tmp_path):
    import json
    import shutil

    import pytest

    from bench import memory
    from models.store import SHIPPED_WEIGHTS

    card = tmp_path / "ct_denoiser.json"
    shutil.copy(SHIPPED_WEIGHTS.with_suffix(".json"), card)
    result = memory.main(["--slices", "2", "--slice-spacing", "5", "--workdir", str(tmp_path), "--card", str(card)])
    entry = json.loads(card.read_text())["evaluation"]["memory"]["5 mm apart"]
    assert entry["added_by_the_pipeline_mib"] == round(result["added_mib"])
    assert entry["peak_rss_mib"]["whole study"] == round(result["run_peak_mib"]) > 0
    with pytest.raises(SystemExit, match="--card records the shipped model's figures; not with --tiny-model"):
        memory.main(["--tiny-model", "--card", str(card)])
