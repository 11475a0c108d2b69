"""The blotchy pass: a series with blotchy noise denoised also through its 2x2 polyphase sub-images."""
import json
import logging

import numpy as np
import pydicom
import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.inference.denoiser import Denoiser
from pipeline.inference.noise_level import SeriesNoise, estimate_series
from pipeline.inference.polyphase import MAX_WHITENESS, merge, phases
from pipeline.inference.strength import model_level_hu
from pipeline.inference.window import Window, hu_to_unit
from pipeline.settings import Settings
from pipeline.synthetic.kernel_noise import kernel_noise

W = Window(-1000, 1000)


def test_the_sub_stacks_cover_every_pixel_once_and_merge_inverts():
    stack = np.arange(2 * 6 * 8, dtype=np.float32).reshape(2, 6, 8)
    subs = phases(stack)
    assert [s.shape for s in subs] == [(2, 3, 4)] * 4
    assert sorted(np.concatenate([s.ravel() for s in subs]).tolist()) == stack.ravel().tolist()
    assert subs[1][0, 0, 0] == stack[0, 0, 1] and subs[2][1, 0, 0] == stack[1, 1, 0]
    assert subs[3][0, 2, 3] == stack[0, 5, 7]
    np.testing.assert_array_equal(merge(subs, (6, 8)), stack)


def test_an_odd_size_is_extended_by_its_last_row_and_column_and_cut_back():
    stack = np.arange(5 * 7, dtype=np.float32).reshape(1, 5, 7)
    subs = phases(stack)
    assert [s.shape for s in subs] == [(1, 3, 4)] * 4
    assert subs[2][0, 2, 0] == stack[0, 4, 0]  # row 5 (absent) repeats row 4
    assert subs[1][0, 0, 3] == stack[0, 0, 6]  # column 7 (absent) repeats column 6
    np.testing.assert_array_equal(merge(subs, (5, 7)), stack)


def test_smooth_kernel_noise_is_whiter_in_the_sub_images():
    hu = 40.0 + kernel_noise((256, 256), "soft", 30.0, seed=3)  # uniform soft tissue, blotchy noise
    whole = estimate_series([hu])
    sub = estimate_series([s[0] for s in phases(hu[None])])
    assert whole.whiteness < 0.6 < MAX_WHITENESS
    assert sub.whiteness > whole.whiteness + 0.2
    assert sub.sigma_hu == pytest.approx(whole.sigma_hu, rel=0.25)


def test_the_setting_is_validated_in_one_line_and_off_by_default(tiny_model):
    with pytest.raises(ConfigError, match=r"^blotchy_pass must be one of mean, off, got 'twice'$"):
        Settings(blotchy_pass="twice")
    with pytest.raises(ConfigError, match="blotchy_pass must be one of mean, off"):
        Denoiser(tiny_model, "cpu", blotchy_pass="")
    assert Settings(blotchy_pass=" Mean ").blotchy_pass == "mean"
    assert Settings().blotchy_pass == "off" and Denoiser(tiny_model, "cpu").blotchy_pass == "off"


def _slices(n: int = 2, size: int = 96, seed: int = 0) -> np.ndarray:
    """Soft tissue (40 HU) with a denser disc, values well inside the window (no edge handling)."""
    yy, xx = np.mgrid[:size, :size]
    disc = np.where((yy - size / 2) ** 2 + (xx - size / 3) ** 2 < (size / 5) ** 2, 200.0, 40.0)
    rng = np.random.default_rng(seed)
    return np.stack([disc + rng.normal(0, 20, disc.shape) for _ in range(n)]).astype(np.float32)


BLOTCHY = SeriesNoise(25.0, 20.0, 30.0, 2, {"soft tissue": 2}, 0.5)


def test_blotchy_noise_gets_the_mean_of_the_direct_and_the_sub_image_passes(tiny_conditioned_model):
    hu = _slices()
    mean = Denoiser(tiny_conditioned_model, "cpu", cpu_batch_size=2, strength="full", blotchy_pass="mean")
    off = Denoiser(tiny_conditioned_model, "cpu", cpu_batch_size=2, strength="full")
    unit = np.clip(hu_to_unit(hu, W), 0, 1)
    direct = off.denoise_unit(unit, np.float32(model_level_hu(25.0, 0.5, off.level_rule) / 2000))
    told_std = np.float32(model_level_hu(25.0, 1.0, off.level_rule) / 2000)  # the sub-images: the std, as white
    poly = merge([off.denoise_unit(s, told_std) for s in phases(unit)], unit.shape[1:])
    assert mean.blotchy(BLOTCHY) and not off.blotchy(BLOTCHY)
    got = hu_to_unit(mean.denoise_hu(hu, W, BLOTCHY), W)
    np.testing.assert_allclose(got, (direct + poly) / 2, atol=2e-5)
    assert np.abs(got - direct).max() > 1e-3  # the second pass changed the result
    np.testing.assert_allclose(hu_to_unit(off.denoise_hu(hu, W, BLOTCHY), W), direct, atol=2e-5)


def test_fine_noise_an_absolute_strength_and_a_blind_model_keep_one_pass(tiny_conditioned_model, tiny_model):
    hu = _slices(n=1, size=65)  # odd size: fine for either path
    white = SeriesNoise(25.0, 20.0, 30.0, 1, {"soft tissue": 1}, 1.0)
    edge = SeriesNoise(25.0, 20.0, 30.0, 1, {"soft tissue": 1}, MAX_WHITENESS)
    for noise, strength, loaded in ((white, "full", tiny_conditioned_model), (edge, "full", tiny_conditioned_model),
                                    (BLOTCHY, "25", tiny_conditioned_model), (BLOTCHY, "full", tiny_model)):
        mean = Denoiser(loaded, "cpu", strength=strength, blotchy_pass="mean")
        off = Denoiser(loaded, "cpu", strength=strength)
        assert not mean.blotchy(noise)
        np.testing.assert_array_equal(mean.denoise_hu(hu, W, noise), off.denoise_hu(hu, W, noise))
    mean = Denoiser(tiny_conditioned_model, "cpu", strength="full", blotchy_pass="mean")
    assert mean.denoise_hu(hu, W, BLOTCHY).shape == (1, 65, 65)


def test_a_context_model_averages_only_the_slices_that_run_alone():
    from models.autoencoder import DenoisingAutoencoder
    from models.store import LoadedModel

    torch.manual_seed(0)
    lone = {"width": 4, "levels": 1, "convs_per_level": 1, "noise_map": True}
    model = DenoisingAutoencoder(**lone, context=1, lone=lone).eval()
    loaded = LoadedModel(model, {"name": "ctx", "version": "0"}, None, "0")
    hu = _slices(n=5, size=64, seed=2)
    links = np.array([True, False, False, True])  # slices 0-1 and 3-4 are neighbours, 2 stands alone
    mean = Denoiser(loaded, "cpu", cpu_batch_size=3, strength="full", blotchy_pass="mean")
    off = Denoiser(loaded, "cpu", cpu_batch_size=3, strength="full")
    np.testing.assert_array_equal(mean.lone(links, 0, 5), [False, False, True, False, False])
    np.testing.assert_array_equal(mean.lone(links, 1, 4), [False, True, False])
    unit = np.clip(hu_to_unit(hu, W), 0, 1)
    told_std = np.float32(model_level_hu(25.0, 1.0, mean.level_rule) / 2000)
    direct = off.denoise_unit(unit, np.float32(model_level_hu(25.0, 0.5, mean.level_rule) / 2000), links=links,
                              span=(1, 4))
    alone = merge([off.denoise_unit(s, told_std, links=np.zeros(0, bool)) for s in phases(unit[2:3])], (64, 64))[0]
    seen: list[int] = []
    got = hu_to_unit(mean.denoise_hu(hu, W, BLOTCHY, links=links, span=(1, 4), on_batch=seen.append), W)
    assert seen == [3, 1]  # the direct pass's batch of 3 slices, then the 1 lone slice's polyphase pass
    np.testing.assert_allclose(got[0], direct[0], atol=2e-5)  # linked: as it was
    np.testing.assert_allclose(got[1], (direct[1] + alone) / 2, atol=2e-5)  # alone: the mean, through the lone network
    np.testing.assert_allclose(got[2], direct[2], atol=2e-5)
    assert np.abs(got[1] - direct[1]).max() > 1e-3
    linked = np.ones(4, bool)  # every slice with neighbours: nothing to average
    seen.clear()
    np.testing.assert_array_equal(mean.denoise_hu(hu, W, BLOTCHY, links=linked, on_batch=seen.append),
                                  off.denoise_hu(hu, W, BLOTCHY, links=linked))
    assert seen == [3, 2]  # no polyphase pass to count


def _blotchy_and_white_study(series_writer, folder):
    yy, xx = np.mgrid[:128, :128]
    body = np.where((yy - 64) ** 2 + (xx - 64) ** 2 < 58**2, 1064.0, 0.0)  # 40 HU disc in air (-1024)
    for name, kind in (("soft", "soft"), ("white", None)):
        rng = np.random.default_rng(7)
        noise = [kernel_noise(body.shape, kind, 30.0, seed=k) if kind else rng.normal(0, 30.0, body.shape)
                 for k in range(3)]
        vol = np.stack([body + n for n in noise]).clip(0, 4000).astype(np.uint16)
        series_writer(folder / name, vol, series=name)


def test_the_setting_enters_the_uids_provenance_and_description_and_gates_per_series(
        tiny_conditioned_model, series_writer, tmp_path, caplog):
    from pipeline.dicom.discovery import scan
    from pipeline.study_run import derivation_info, process_scan, study_output_folder

    caplog.set_level(logging.INFO)
    _blotchy_and_white_study(series_writer, tmp_path / "in")
    runs = {}
    for mode in ("mean", "off"):
        settings = Settings(progress=False, qa_every=0, qa_panels=0, strength="full", blotchy_pass=mode)
        denoiser = Denoiser.from_settings(tiny_conditioned_model, settings)
        (outcome,) = process_scan(scan(tmp_path / "in"), tmp_path / mode, settings, denoiser)
        runs[mode] = (outcome, derivation_info(settings, denoiser))
    (mean, mean_info), (off, off_info) = runs["mean"], runs["off"]
    assert mean_info.fingerprint != off_info.fingerprint and "blotchy pass mean" in mean_info.description
    assert "blotchy" not in off_info.description
    assert {s.derived_series_uid for s in mean.series}.isdisjoint(s.derived_series_uid for s in off.series)
    by_kind = {}
    for outcome, mode in ((mean, "mean"), (off, "off")):
        folder = study_output_folder(tmp_path / mode, outcome.study_uid)
        for s in outcome.series:
            kind = "soft" if s.noise.whiteness < MAX_WHITENESS else "white"
            (f, *_) = sorted((folder / s.derived_series_uid).glob("*.dcm"))
            ds = pydicom.dcmread(f)
            prov = json.loads((folder / s.derived_series_uid / "provenance.json").read_text())
            by_kind[kind, mode] = (ds.pixel_array,
                                   ds.DerivationDescription, prov["blotchy_pass"])
    assert {k for k, _ in by_kind} == {"soft", "white"}  # the two series read either side of the gate
    pixels, text, prov = by_kind["soft", "mean"]
    assert prov["setting"] == "mean" and prov["lone_slices_averaged"] == 3  # a 2-D model: every slice runs alone
    assert prov["below_whiteness"] == MAX_WHITENESS and prov["series_whiteness"] < MAX_WHITENESS
    assert "3 lone slice(s) averaged with their 2x2 polyphase sub-images' result" in text
    assert not np.array_equal(pixels, by_kind["soft", "off"][0])
    pixels, text, prov = by_kind["white", "mean"]
    assert prov["lone_slices_averaged"] == 0 and "polyphase" not in text
    np.testing.assert_array_equal(pixels, by_kind["white", "off"][0])  # above the gate: the same pixels
    assert by_kind["soft", "off"][2] == {"setting": "off", "lone_slices_averaged": 0, "below_whiteness": MAX_WHITENESS,
                                         "series_whiteness": by_kind["soft", "mean"][2]["series_whiteness"]}
    assert "blotchy noise (whiteness" in caplog.text
    assert "3 lone slice(s) averaged with their 2x2 polyphase sub-images' result" in caplog.text


def test_the_study_run_refuses_a_denoiser_built_with_another_setting(tiny_conditioned_model, tmp_path):
    from pipeline.dicom.discovery import scan
    from pipeline.study_run import process_scan

    settings = Settings(progress=False)
    other = Denoiser.from_settings(tiny_conditioned_model, Settings(progress=False, blotchy_pass="mean"))
    with pytest.raises(ConfigError, match="blotchy_pass 'off' in the settings, but the denoiser uses 'mean'"):
        process_scan(scan(tmp_path), tmp_path / "out", settings, other)
