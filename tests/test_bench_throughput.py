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
