import math

import numpy as np
import pytest

from pipeline.inference.window import Window
from pipeline.qa.filters import FilterParams, classical_filters, parse_nlm_h
from pipeline.qa.noise import add_gaussian_noise, seed_from_uid
from pipeline.qa.series import FILTERS, METHODS, qa_series


def _phantom_hu(n=3):
    yy, xx = np.mgrid[:96, :96]
    base = np.where((yy - 48) ** 2 + (xx - 48) ** 2 < 1600, 40.0, -1000.0)
    base[44:52, 44:52] = 1500.0  # bone above the window
    return np.stack([base + 10 * k for k in range(n)]).astype(np.float32)


def test_noise_is_seeded_by_uid_and_leaves_global_rng_alone():
    img = np.full((32, 32), 0.5, np.float32)
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    a = add_gaussian_noise(img, 0.07, seed_from_uid("1.2.3"))
    assert np.random.random() == before  # global RNG untouched
    np.testing.assert_array_equal(a, add_gaussian_noise(img, 0.07, seed_from_uid("1.2.3")))
    assert not np.array_equal(a, add_gaussian_noise(img, 0.07, seed_from_uid("1.2.4")))
    assert abs(float((a - img).std()) - 0.07) < 0.01
    assert add_gaussian_noise(img, 0.0, 1).tolist() == img.tolist()


def test_qa_numbers_are_identical_across_runs():
    hu, uids = _phantom_hu(), ["1.2.3.1", "1.2.3.2", "1.2.3.3"]

    def run():
        return qa_series("1.2.3", uids, hu, Window(), 0.07, lambda x, noise: x * 0 + 0.5, FilterParams())

    (s1, r1), (s2, r2) = run(), run()
    assert [(s.method, s.mean_psnr, s.mean_ssim) for s in s1] == [(s.method, s.mean_psnr, s.mean_ssim) for s in s2]
    assert [(r.psnr, r.ssim) for r in r1] == [(r.psnr, r.ssim) for r in r2]


def test_qa_scores_every_method_against_the_clipped_reference():
    hu, uids = _phantom_hu(2), ["9.1", "9.2"]
    summaries, scores = qa_series("9", uids, hu, Window(), 0.07, lambda x, noise: x, FilterParams(),
                                  told_fn=lambda x, s: x * 0 + 0.5)
    assert [s.method for s in summaries] == list(METHODS)
    by = {s.method: s for s in summaries}
    # a model that returns its input scores exactly like the noisy copy
    assert by["autoencoder"].mean_psnr == pytest.approx(by["noisy"].mean_psnr)
    assert by["autoencoder_told"].mean_psnr < by["noisy"].mean_psnr  # the told row is its own run
    assert by["noisy"].mean_psnr == pytest.approx(23.1, abs=2.5)  # sigma 0.07: about -20 log10(0.07) dB
    for m in ("gaussian", "average", "median", "bilateral", "nlm"):
        assert by[m].mean_psnr > by["noisy"].mean_psnr
    assert by["nlm"].mean_psnr > by["gaussian"].mean_psnr  # the stronger filter is stronger
    assert len(scores) == len(METHODS) * 2 and {r.sop_uid for r in scores} == set(uids)
    assert all(s.min_psnr <= s.mean_psnr for s in summaries)


def test_filters_reject_bad_parameters_and_keep_shape():
    with pytest.raises(ValueError, match="odd"):
        FilterParams(gaussian_ksize=4)
    with pytest.raises(ValueError, match="median_ksize"):
        FilterParams(median_ksize=7)
    with pytest.raises(ValueError, match="nlm_h must be positive or auto, got 0"):
        FilterParams(nlm_h=0)
    with pytest.raises(ValueError, match="nlm_h must be positive or auto, got 'strong'"):
        parse_nlm_h("strong")
    assert parse_nlm_h("auto") is None and parse_nlm_h(" AUTO ") is None and parse_nlm_h("0.05") == 0.05
    with pytest.raises(ValueError, match="nlm_h auto needs the images' noise estimate"):
        classical_filters(FilterParams())
    img = np.random.default_rng(0).random((17, 23)).astype(np.float32)
    filters = classical_filters(FilterParams(), noise_unit=0.05)
    assert list(filters) == list(FILTERS) == list(METHODS[3:])  # every filter is in the report, in its order
    for name, f in filters.items():
        out = f(img)
        assert out.shape == img.shape and out.dtype == np.float32, name


def test_nlm_is_told_the_noise_estimate_of_the_copies_not_the_added_std(monkeypatch):
    """The model is told nothing (it estimates the noise from the copies); NLM, the filter that needs
    the noise level, gets that same estimate: h = NLM_H_PER_SIGMA x the estimated std (unit scale)."""
    from pipeline.inference.noise_level import estimate_series
    from pipeline.inference.window import hu_to_unit, unit_to_hu
    from pipeline.qa import filters as filters_module

    told = []
    monkeypatch.setattr(filters_module, "non_local_means", lambda im, h: told.append(h) or im)
    hu = _phantom_hu(3) + 25.0 * np.random.default_rng(1).standard_normal((3, 96, 96)).astype(np.float32)
    uids = [f"1.2.8.{k}" for k in range(3)]
    model_told = []
    qa_series("8", uids, hu, Window(), 0.05, lambda x, noise: model_told.append(noise.sigma_hu) or x, FilterParams())
    noisy = np.stack([add_gaussian_noise(hu_to_unit(h, Window()), 0.05, seed_from_uid(u)) for h, u in zip(hu, uids)])
    estimate = estimate_series(list(unit_to_hu(noisy, Window()))).sigma_hu
    expected = filters_module.NLM_H_PER_SIGMA * estimate / 2000
    assert told == pytest.approx([expected] * 3, rel=1e-6)
    assert model_told == pytest.approx([estimate], rel=1e-6)  # the model got that same estimate
    assert expected == pytest.approx(math.hypot(0.05, 25 / 2000), rel=0.12)  # the copies' total noise
    told.clear()
    qa_series("8", uids, hu, Window(), 0.05, lambda x, noise: x, FilterParams(nlm_h=0.02))
    assert told == [0.02] * 3  # a fixed h is used as it is


@pytest.mark.parametrize("noise", [0.07, "lowdose"])
def test_qa_on_several_threads_scores_exactly_as_on_one(monkeypatch, noise):
    from pipeline.qa import series as qa
    from pipeline.qa.noise import NoiseModel

    hu = _phantom_hu(5)
    uids = [f"1.2.9.{k}" for k in range(5)]
    model = NoiseModel("lowdose", i0=1e4) if noise == "lowdose" else noise

    def run(threads):
        monkeypatch.setattr(qa, "QA_THREADS", threads)
        summaries, rows = qa_series("1.2.9", uids, hu, Window(), model, lambda x, noise: x * 0.9 + 0.05, FilterParams(),
                                    pixel_mm=2.0, told_fn=lambda x, s: x * 0.8)
        return [(s.method, s.mean_psnr, s.mean_ssim) for s in summaries], [(r.sop_uid, r.method, r.psnr, r.ssim)
                                                                            for r in rows]

    assert run(1) == run(4)


def test_qa_can_use_the_low_dose_noise_model():
    from pipeline.qa.noise import NoiseModel

    hu, uids = _phantom_hu(2), ["7.1", "7.2"]
    noise = NoiseModel("lowdose", i0=1e4)
    s1, _ = qa_series("7", uids, hu, Window(), noise, lambda x, noise: x, FilterParams(), pixel_mm=2.0)
    s2, _ = qa_series("7", uids, hu, Window(), noise, lambda x, noise: x, FilterParams(), pixel_mm=2.0)
    assert [s.mean_psnr for s in s1] == [s.mean_psnr for s in s2]  # seeded
    gauss, _ = qa_series("7", uids, hu, Window(), 0.07, lambda x, noise: x, FilterParams())
    noisy_ld = next(s for s in s1 if s.method == "noisy").mean_psnr
    noisy_g = next(s for s in gauss if s.method == "noisy").mean_psnr
    assert 15 < noisy_ld < 60 and noisy_ld != noisy_g
    assert noise.label == "lowdose I0=10000"
    with pytest.raises(ValueError, match="gaussian, lowdose, soft, standard, sharp"):
        NoiseModel("poisson")


def test_qa_in_blocks_scores_each_slice_as_alone_and_keeps_the_panel_images():
    from pipeline.qa.series import QA_BLOCK

    fixed = FilterParams(nlm_h=0.08)  # auto: NLM is told the block's noise estimate, which depends on the block
    n = QA_BLOCK + 4
    hu = np.concatenate([_phantom_hu(3)] * 7)[:n]
    uids = [f"7.{k}" for k in range(n)]
    positions = [10 * k for k in range(n)]
    kept = {positions[2]: {}, positions[-1]: {}}
    summaries, scores = qa_series("7", uids, list(hu), Window(), 0.07, lambda x, noise: x * 0.9, fixed,
                                  indices=positions, kept=kept, told_fn=lambda x, s: x * 0.8)
    assert {s.slices for s in summaries} == {n}
    alone = {(r.method, r.sop_uid): r.psnr for k in (2, n - 1)
             for r in qa_series("7", [uids[k]], hu[k:k + 1], Window(), 0.07, lambda x, noise: x * 0.9, fixed,
                                told_fn=lambda x, s: x * 0.8)[1]}
    for r in scores:
        if r.sop_uid in (uids[2], uids[-1]):
            assert r.psnr == alone[r.method, r.sop_uid]
    assert sorted(r.index for r in scores if r.method == "median") == positions
    assert set(kept[positions[-1]]) == set(METHODS) and kept[positions[2]]["noisy"].shape == (96, 96)


def test_every_method_gets_the_same_unclipped_noisy_copy_and_only_the_told_row_the_true_sigma(monkeypatch):
    """The yardstick: noise added to the slice as stored and never clipped, the same copy for every
    filter and for the model as the derived series runs it (it gets nothing else: it estimates the
    noise itself); the told row gets that copy clipped to the window (its input window) and the
    noise std."""
    from pipeline.qa import series as qa

    hu = _phantom_hu(2)
    hu[:, :10] = -1024.0  # air below the window, as scanners write it
    uids = ["5.1", "5.2"]
    seen: dict[str, list[np.ndarray]] = {}

    def recording(name):
        def f(im):
            seen.setdefault(name, []).append(im.copy())
            return im
        return f

    monkeypatch.setattr(qa, "classical_filters", lambda p, noise_unit=None: {m: recording(m) for m in ("gaussian", "nlm")})
    monkeypatch.setattr(qa, "METHODS", ("noisy", "autoencoder", "autoencoder_told", "gaussian", "nlm"))
    told = []

    def delivered(x, noise):
        seen.setdefault("autoencoder", []).extend(x.copy())
        return x

    def told_model(x, sigma):
        seen.setdefault("autoencoder_told", []).extend(x.copy())
        told.append(np.asarray(sigma).tolist())
        return x

    summaries, _ = qa_series("5", uids, hu, Window(), 0.07, delivered, FilterParams(), told_fn=told_model)
    unit = (hu + 1000) / 2000
    def only_match(images, wanted):  # slices are scored on a thread pool: in any order
        return sum(np.array_equal(im, wanted) for im in images) == 1

    assert all(len(seen[name]) == len(uids) for name in ("gaussian", "nlm", "autoencoder", "autoencoder_told"))
    for k, uid in enumerate(uids):
        expected = add_gaussian_noise(unit[k], 0.07, seed_from_uid(uid))
        for name in ("gaussian", "nlm", "autoencoder"):
            assert only_match(seen[name], expected)  # fails if the copy were clipped
        assert expected.min() < -0.1 and expected.max() > 1.1  # really not clipped
        assert only_match(seen["autoencoder_told"], np.clip(expected, 0, 1))
    assert told == [[pytest.approx(0.07)] * 2]
    by = {s.method: s.mean_psnr for s in summaries}
    # a filter returning its unclipped input scores as the noisy copy: both are clipped only for scoring
    assert by["gaussian"] == by["noisy"] == by["autoencoder"] == by["autoencoder_told"]


def test_unclipped_noise_stays_zero_mean_where_the_reference_is_air():
    air = np.full((64, 64), -1024.0, np.float32)
    unit = (air + 1000) / 2000
    noisy = add_gaussian_noise(unit, 0.07, 11)
    assert abs(float((noisy - unit).mean())) < 0.005  # clipped at 0 it would be about +0.4 sigma
    from pipeline.qa.noise import NoiseModel

    copy, sigma = NoiseModel("gaussian", 0.05).noisy(unit, air, 2000.0, 0.7, 11)
    assert sigma == 0.05 and copy.min() < -0.1
    copy, sigma = NoiseModel("lowdose", i0=1e4).noisy(unit, np.full((64, 64), 40.0, np.float32), 2000.0, 2.0, 11)
    assert 0.001 < sigma == pytest.approx(float(copy[copy != unit].std()), rel=0.05)
