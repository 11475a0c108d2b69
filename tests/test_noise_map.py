"""The local noise level: the map of where a slice's noise is stronger, and the model told it."""
import numpy as np
import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.inference.denoiser import Denoiser
from pipeline.inference.noise_level import SeriesNoise
from pipeline.inference.noise_map import relative_noise_map
from pipeline.inference.strength import model_level_hu
from pipeline.inference.window import Window
from pipeline.settings import Settings


def _two_halves(size: int = 512, left: float = 20.0, right: float = 40.0, seed: int = 0) -> np.ndarray:
    """Uniform soft tissue (40 HU) with white noise of std ``left`` HU in its left half, ``right`` in its right."""
    rng = np.random.default_rng(seed)
    std = np.where(np.arange(size)[None, :] < size // 2, left, right).astype(np.float32)
    return (40.0 + rng.standard_normal((size, size)).astype(np.float32) * std).astype(np.float32)


def test_the_map_reads_where_the_noise_is_stronger():
    m = relative_noise_map(_two_halves())
    assert m.shape == (512, 512) and m.dtype == np.float32
    # the estimate is measured in the flattest blocks: the quiet half reads 1, the noisy half twice that
    assert np.median(m[:, :100]) == pytest.approx(1.0, abs=0.08)
    assert np.median(m[:, 412:]) == pytest.approx(2.0, abs=0.16)
    assert np.all(np.diff(m[256, 100:412]) >= -0.02)  # a smooth rise across the border, no jump back


def test_stationary_noise_reads_one_everywhere():
    m = relative_noise_map(_two_halves(right=20.0, seed=3))
    assert 0.85 < m.min() and m.max() < 1.15


def test_the_map_is_one_where_nothing_can_be_measured():
    np.testing.assert_array_equal(relative_noise_map(np.zeros((30, 64), np.float32) + 40), np.ones((30, 64)))
    np.testing.assert_array_equal(relative_noise_map(np.full((128, 128), 40.0, np.float32)), np.ones((128, 128)))
    m = relative_noise_map(_two_halves(size=100))  # not a multiple of the block: edge blocks repeated
    assert m.shape == (100, 100) and np.isfinite(m).all()


def _recording():
    from models.autoencoder import DenoisingAutoencoder
    from models.store import LoadedModel

    torch.manual_seed(0)
    model = DenoisingAutoencoder(width=4, levels=1, convs_per_level=1, noise_map=True, blocks=1).eval()
    told: list[np.ndarray] = []
    forward = model.forward
    model.forward = lambda x, sigma=None: told.append(sigma.detach().cpu().numpy()) or forward(x, sigma)
    return LoadedModel(model, {"name": "cond", "version": "0"}, None, "0"), told


def test_a_relative_strength_tells_the_series_level_shaped_by_each_slice():
    loaded, told = _recording()
    hu = np.stack([_two_halves(seed=1), _two_halves(left=30.0, right=30.0, seed=2)])
    noise = SeriesNoise(25.0, 20.0, 30.0, 2, {"soft tissue": 2}, 1.0)
    w = Window(-1000, 1000)
    level = model_level_hu(25.0, 1.0) / w.width
    Denoiser(loaded, "cpu", cpu_batch_size=2, strength="full", noise_level_map="local").denoise_hu(hu, w, noise)
    (sigma,) = told
    assert sigma.shape == (2, 1, 512, 512)
    np.testing.assert_allclose(sigma[:, 0], np.stack([relative_noise_map(h) for h in hu]) * level, rtol=1e-5)
    assert np.median(sigma[0, 0, :, 412:]) / np.median(sigma[0, 0, :, :100]) == pytest.approx(2.0, abs=0.2)
    told.clear()  # one level per series: as before the map
    Denoiser(loaded, "cpu", cpu_batch_size=2, strength="full", noise_level_map="series").denoise_hu(hu, w, noise)
    np.testing.assert_allclose(told[0], [level, level], rtol=1e-6)
    told.clear()  # blotchy noise (a smooth kernel): the high-pass would map the anatomy, one level
    blotchy = SeriesNoise(25.0, 20.0, 30.0, 2, {"soft tissue": 2}, 0.5)
    d = Denoiser(loaded, "cpu", cpu_batch_size=2, strength="full", noise_level_map="local")
    d.denoise_hu(hu, w, blotchy)
    np.testing.assert_allclose(told[0], [model_level_hu(25.0, 0.5)] * 2 / np.float32(w.width), rtol=1e-6)
    assert d.maps_levels(noise) and not d.maps_levels(blotchy) and d.local_levels()
    told.clear()  # an absolute strength is the level the user asked for, everywhere
    Denoiser(loaded, "cpu", cpu_batch_size=2, strength="30", noise_level_map="local").denoise_hu(hu, w, noise)
    np.testing.assert_allclose(told[0], [0.015, 0.015], rtol=1e-6)


def test_a_span_gets_the_maps_of_its_own_slices():
    loaded, told = _recording()
    hu = np.stack([_two_halves(128, seed=s) for s in range(4)])
    noise = SeriesNoise(25.0, 20.0, 30.0, 4, {"soft tissue": 4}, 1.0)
    Denoiser(loaded, "cpu", cpu_batch_size=4, strength="full", noise_level_map="local").denoise_hu(
        hu, Window(-1000, 1000), noise, span=(1, 3))
    expected = np.stack([relative_noise_map(h) for h in hu[1:3]]) * model_level_hu(25.0, 1.0) / 2000
    np.testing.assert_allclose(told[0][:, 0], expected, rtol=1e-5)


def test_the_map_setting_is_validated_in_one_line(tiny_model):
    with pytest.raises(ConfigError, match=r"^noise_level_map must be one of local, series, got 'pixel'$"):
        Settings(noise_level_map="pixel")
    with pytest.raises(ConfigError, match="noise_level_map must be one of local, series"):
        Denoiser(tiny_model, "cpu", noise_level_map="")
    assert Settings(noise_level_map=" Series ").noise_level_map == "series"
    assert Settings().noise_level_map == "series" and Denoiser(tiny_model, "cpu").noise_level_map == "series"


def test_the_map_setting_enters_the_derived_uids_and_must_match_the_denoiser(tiny_conditioned_model, tmp_path):
    from pipeline.dicom.discovery import scan
    from pipeline.study_run import derivation_info, process_scan

    local, series = Settings(progress=False, noise_level_map="local"), Settings(progress=False)
    info_local = derivation_info(local, Denoiser.from_settings(tiny_conditioned_model, local))
    info_series = derivation_info(series, Denoiser.from_settings(tiny_conditioned_model, series))
    assert info_local.fingerprint != info_series.fingerprint  # another map setting: another derived series
    assert "noise level map local" in info_local.description
    assert "noise level map" not in info_series.description
    with pytest.raises(ConfigError, match="noise_level_map 'series' in the settings, but the denoiser uses 'local'"):
        process_scan(scan(tmp_path), tmp_path / "out", series, Denoiser.from_settings(tiny_conditioned_model, local))
