import numpy as np
import pytest
import torch

from models.store import LoadedModel
from pipeline.errors import ConfigError
from pipeline.inference.denoiser import Denoiser, resolve_device
from pipeline.inference.window import Window


def _identity(tiny_model: LoadedModel) -> LoadedModel:
    """The tiny model with a zero noise head: output == input."""
    model = type(tiny_model.model)(**tiny_model.model.config)
    model.load_state_dict(tiny_model.model.state_dict())
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    return LoadedModel(model, tiny_model.card, tiny_model.path, tiny_model.sha256)


def test_hu_outside_the_window_are_not_clipped(tiny_model):
    hu = np.array([[[-3024, -1024, -1000, 0], [500, 1000, 1800, 3071]]], dtype=np.float32)
    out = Denoiser(_identity(tiny_model), "cpu").denoise_hu(hu, Window(-1000, 1000))
    np.testing.assert_allclose(out, hu, atol=1e-3)


@pytest.mark.parametrize(("strength", "share"), [("full", 1.0), ("high", 0.75), ("60", 1.0), ("20", 0.5),
                                                ("medium", 0.5), ("low", 0.25), ("60%", 0.6)])
def test_correction_is_added_to_unclipped_values_at_the_blind_models_strength(tiny_model, strength, share):
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1500, 2500, size=(3, 16, 16)).astype(np.float32)
    d = Denoiser(tiny_model, "cpu", strength=strength)
    w = Window(-1000, 1000)
    out = d.denoise_hu(hu, w)
    unit = (hu + 1000) / 2000
    clipped = np.clip(unit, 0, 1)
    model = d.denoise_unit(clipped)
    beyond = np.clip(1 - model / 0.025, 0, 1) * np.minimum(unit, 0) + np.clip(1 - (1 - model) / 0.025, 0, 1) * np.maximum(unit - 1, 0)
    expected = hu + share * (model + beyond - unit) * 2000
    np.testing.assert_allclose(out, expected, atol=1e-2)
    assert np.abs(d.denoise_unit(clipped) - clipped).max() > 1e-3  # the blend is visible


class _Constant(torch.nn.Module):
    """A blind 'model' whose output is one value everywhere."""

    noise_map = False

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x, sigma=None):
        return x * 0 + self.value


@pytest.mark.parametrize(("value", "expected"), [
    (0.0, [-1100.0, -3024.0, -1000.0, -1000.0]),  # output at the low edge: what lies below is kept
    (1.0, [1000.0, 1000.0, 1500.0, 3071.0]),  # at the high edge: what lies above is kept
    (0.3, [-400.0, -400.0, -400.0, -400.0]),  # inside: the model's value, no noise beyond the window given back
])
def test_what_lies_beyond_the_window_is_kept_only_where_the_model_sits_at_that_edge(value, expected):
    loaded = LoadedModel(_Constant(value), {"name": "constant", "version": "0"}, None, "0")
    hu = np.array([[[-1100.0, -3024.0, 1500.0, 3071.0]]], np.float32)
    out = Denoiser(loaded, "cpu", strength="full").denoise_hu(hu, Window(-1000, 1000))
    np.testing.assert_allclose(out[0, 0], expected, atol=1e-3)


def _conditioned(seed: int = 0) -> LoadedModel:
    from models.autoencoder import DenoisingAutoencoder

    torch.manual_seed(seed)
    model = DenoisingAutoencoder(width=4, levels=1, convs_per_level=1, noise_map=True, blocks=1).eval()
    return LoadedModel(model, {"name": "cond", "version": "0"}, None, "0")


def _recording_conditioned():
    """A conditioned model that records the noise levels it is told, the list they go to, and its
    own forward."""
    loaded = _conditioned()
    told: list = []
    real_forward = loaded.model.forward
    loaded.model.forward = lambda x, sigma=None: told.append(sigma.tolist()) or real_forward(x, sigma)
    return loaded, told, real_forward


def test_a_noise_conditioned_model_is_told_the_strength_in_window_units(caplog):
    caplog.set_level("INFO", logger="pipeline.inference.denoiser")
    loaded, told, real_forward = _recording_conditioned()
    hu = np.random.default_rng(2).uniform(-900, 900, size=(2, 16, 16)).astype(np.float32)
    w = Window(-1000, 1000)
    d = Denoiser(loaded, "cpu", cpu_batch_size=2, strength="30")
    out = d.denoise_hu(hu, w)
    assert told == [[pytest.approx(0.015), pytest.approx(0.015)]]  # 30 HU of a 2000 HU window
    assert "strength 30 HU" in caplog.text
    clipped = (hu + 1000) / 2000
    np.testing.assert_allclose(out, hu + (d.denoise_unit(clipped, 0.015) - clipped) * 2000, atol=1e-2)
    strong = Denoiser(loaded, "cpu", strength="60").denoise_hu(hu, w)
    assert not np.allclose(strong, out, atol=1e-3)  # the level changes what is removed
    told.clear()
    d.denoise_unit(clipped, np.array([0.01, 0.05], np.float32))  # one level per image (QA copies)
    assert told == [[pytest.approx(0.01), pytest.approx(0.05)]]
    with pytest.raises(ConfigError, match="conditioned on the noise level"):
        d.denoise_unit(clipped)


def test_a_relative_strength_tells_the_model_the_series_noise_and_blends_its_share():
    from pipeline.inference.noise_level import SeriesNoise
    from pipeline.inference.strength import model_level_hu

    loaded, told, real_forward = _recording_conditioned()
    hu = np.random.default_rng(2).uniform(-900, 900, size=(2, 16, 16)).astype(np.float32)
    w = Window(-1000, 1000)
    noisy, quiet = (SeriesNoise(s, s, s, 2, {"soft tissue": 2}, 1.0) for s in (40.0, 10.0))
    clipped = (hu + 1000) / 2000
    for text, share in (("full", 1.0), ("medium", 0.5), ("30%", 0.3)):
        d = Denoiser(loaded, "cpu", cpu_batch_size=2, strength=text, noise_level_map="series")
        told.clear()
        out = d.denoise_hu(hu, w, noisy)
        level = model_level_hu(40.0, 1.0) / 2000
        assert told == [[pytest.approx(level)] * 2]
        expected = hu + share * (real_forward(torch.from_numpy(clipped[:, None]), torch.full((2,), level))
                                 .detach().numpy()[:, 0] - clipped) * 2000
        np.testing.assert_allclose(out, expected, atol=1e-2)
    told.clear()
    d.denoise_hu(hu, w, quiet)  # a quieter series: a lower level, whatever the strength's name
    assert told == [[pytest.approx(model_level_hu(10.0, 1.0) / 2000)] * 2] and model_level_hu(10.0) < model_level_hu(40.0)
    with pytest.raises(ConfigError, match="'30%' is relative to the series' noise: no noise estimate given"):
        d.denoise_hu(hu, w)


@pytest.mark.parametrize(("bad", "why"), [("extreme", ""), ("0", "in HU must be in"), ("-5", "in HU must be in"),
                                          ("nan", ""), ("600 HU", "in HU must be in"), ("0%", "percentage must be"),
                                          ("150%", "percentage must be"), ("abc%", "percentage must be"), ("", "")])
def test_strength_is_validated(tiny_model, bad, why):
    with pytest.raises(ConfigError, match="strength must be low, medium, high, full, a percentage") as err:
        Denoiser(tiny_model, "cpu", strength=bad)
    assert why in str(err.value) and repr(bad) in str(err.value) and "\n" not in str(err.value)


def test_batch_size_does_not_change_results(tiny_model):
    x = np.random.default_rng(1).random((5, 20, 24)).astype(np.float32)
    a = Denoiser(tiny_model, "cpu", batch_size=1).denoise_unit(x)
    b = Denoiser(tiny_model, "cpu", batch_size=4).denoise_unit(x)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert a.shape == x.shape  # 20 x 24 is not a multiple of the downsampling: padded and cropped


def test_progress_callback_counts_slices(tiny_model):
    seen = []
    Denoiser(tiny_model, "cpu", batch_size=2).denoise_unit(np.zeros((5, 8, 8), np.float32), on_batch=seen.append)
    assert seen == [2, 2, 1]


def test_cpu_batch_size_applies_on_the_cpu_only(tiny_model, caplog):
    caplog.set_level("INFO", logger="pipeline.inference.denoiser")
    seen = []
    d = Denoiser(tiny_model, "cpu", batch_size=8, cpu_batch_size=1)
    assert "on cpu (batch 1)" in caplog.text  # the batch it really uses
    d.denoise_unit(np.zeros((3, 8, 8), np.float32), on_batch=seen.append)
    assert (d.batch_size, seen) == (1, [1, 1, 1])
    assert Denoiser(tiny_model, "cpu", batch_size=8).batch_size == 8  # not given: batch_size everywhere
    with pytest.raises(ConfigError, match="cpu_batch_size must be >= 1"):
        Denoiser(tiny_model, "cpu", cpu_batch_size=0)


def test_device_selection():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="device must be auto, cpu or cuda"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown on machines without a GPU")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        resolve_device("cuda")


def test_amp_only_on_cuda(tiny_model):
    d = Denoiser(tiny_model, "cpu", amp=True)
    assert d.amp is False
    with pytest.raises(ConfigError, match="batch_size"):
        Denoiser(tiny_model, "cpu", batch_size=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_mixed_precision_matches_cpu(tiny_model):
    x = np.random.default_rng(2).random((4, 64, 64)).astype(np.float32)
    cpu = Denoiser(tiny_model, "cpu").denoise_unit(x)
    gpu = Denoiser(tiny_model, "cuda", amp=True).denoise_unit(x)
    np.testing.assert_allclose(gpu, cpu, atol=2e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cpu_batch_size_does_not_apply_on_cuda(tiny_model):
    assert Denoiser(tiny_model, "cuda", batch_size=8, cpu_batch_size=1).batch_size == 8


def test_the_denoiser_of_a_run_is_built_from_its_settings_and_the_strength_is_parsed_once(tiny_model):
    from pipeline.inference.strength import Strength
    from pipeline.settings import Settings

    settings = Settings(strength="60%", device="cpu", batch_size=6, cpu_batch_size=3, amp=False)
    assert isinstance(settings.strength, Strength) and settings.strength.share == pytest.approx(0.6)
    assert settings.as_dict()["strength"] == "60%"  # provenance keeps the words the user wrote
    d = Denoiser.from_settings(tiny_model, settings)
    assert d.strength is settings.strength  # the one parsed value, not a second conversion
    assert (d.device.type, d.batch_size, d.amp) == ("cpu", 3, False)


def test_the_cpu_denoiser_runs_channels_last_and_gives_the_plain_models_results():
    from models.store import load_model

    loaded = load_model(None)  # the shipped model
    plain = type(loaded.model)(**loaded.model.config).eval()
    plain.load_state_dict(loaded.model.state_dict())
    images = np.random.default_rng(3).random((3, 48, 40), dtype=np.float32)
    c = loaded.model.context  # a context model: each slice with its neighbours, replicated past the ends
    stacks = images[np.clip(np.arange(3)[:, None] + np.arange(-c, c + 1), 0, 2)]
    with torch.inference_mode():
        expected = plain(torch.from_numpy(stacks), torch.full((3,), 0.03))[:, 0].numpy()
    d = Denoiser(loaded, "cpu", cpu_batch_size=2)
    wide = [p for p in d.model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] > 1]
    assert d.channels_last and wide and all(p.is_contiguous(memory_format=torch.channels_last) for p in wide)
    assert not wide[0].is_contiguous()  # really another layout, not a no-op
    np.testing.assert_allclose(d.denoise_unit(images, 0.03), expected, rtol=0, atol=2e-5)
