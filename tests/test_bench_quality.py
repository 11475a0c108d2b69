"""bench/quality.py: its slices, its noise (the QA report's), the margins and the card record."""
import json

import numpy as np
import pytest

from bench.quality import BenchSlice, margins, noisy_copy, print_tables, pydicom_slices, record_real_ct, rows
from pipeline.qa.noise import add_gaussian_noise, seed_from_uid


def test_margins_against_bm3d_seed_filters_and_the_best_classical_method():
    psnr = {"noisy": 25.0, "autoencoder": 35.0, "gaussian": 30.0, "average": 29.0, "median": 31.0,
            "bilateral": 30.5, "nlm": 32.0, "bm3d": 34.2}
    assert margins(psnr) == pytest.approx({"bm3d": 0.8, "seed filters": 4.0, "best classical": 0.8})
    del psnr["bm3d"]  # --no-bm3d
    assert margins(psnr) == pytest.approx({"seed filters": 4.0, "best classical": 3.0})


def test_pydicom_slices_are_read_as_stored_with_their_pixel_size_and_uid():
    small, head = pydicom_slices()
    assert (small.group, small.hu.shape, head.hu.shape) == ("CT_small", (128, 128), (512, 512))
    assert small.pixel_mm == pytest.approx(0.661468) and head.pixel_mm == pytest.approx(0.431)
    assert small.uid.startswith("1.3.6.1.4.1.5962") and small.reference.max() <= 1
    assert (small.kernel, head.kernel) == ("STANDARD", "11")  # ConvolutionKernel as each file writes it
    assert head.unit.min() < 0  # air below -1000 HU is kept as stored (the yardstick does not clip)


def test_the_bench_scores_the_qa_reports_own_noisy_copy_unclipped():
    sl = BenchSlice("pydicom", "g", "x.dcm", "1.2.3.4", np.full((32, 32), -1024.0, np.float32), 0.7)
    noisy, sigma = noisy_copy(sl, "0.07", 0)
    np.testing.assert_array_equal(noisy, add_gaussian_noise(sl.unit, 0.07, seed_from_uid("1.2.3.4")))
    assert sigma == 0.07 and noisy.min() < -0.1
    other, _ = noisy_copy(sl, "0.07", 1)
    assert not np.array_equal(other, noisy)  # further seeds differ
    tuning, _ = noisy_copy(sl, "0.07", 0, "tune")
    assert not np.array_equal(tuning, noisy)  # filters are tuned on other noise
    ld, ld_sigma = noisy_copy(BenchSlice("p", "g", "y", "1.2", np.full((64, 64), 40.0, np.float32), 2.0),
                              "lowdose@10000", 0)
    assert 0 < ld_sigma < 0.2


def test_real_ct_figures_are_recorded_in_the_model_card(tmp_path):
    from types import SimpleNamespace

    card = tmp_path / "card.json"
    card.write_text(json.dumps({"name": "m", "weights_sha256": "a" * 64, "evaluation": {"phantoms": {"x": 1}}}))
    loaded = SimpleNamespace(sha256="a" * 64, path=tmp_path / "m.safetensors")
    sl = [BenchSlice("test", "orthanc_tests", f"f{k}", "1", np.zeros((4, 4), np.float32), 1.0) for k in range(2)]
    results = {"0.07": {"test": {"f0": {"autoencoder": (40.0, 0.9), "bm3d": (39.0, 0.8)},
                                 "f1": {"autoencoder": (42.0, 0.9), "bm3d": (40.0, 0.8)}}}}
    record_real_ct(card, loaded, results, {"test": sl}, 1, {"autoencoder": [0.3, 0.5], "bm3d": [8.0]})
    written = json.loads(card.read_text())
    assert written["evaluation"]["phantoms"] == {"x": 1}  # the rest of the card is kept
    real = written["evaluation"]["real_ct"]
    assert real["psnr_db"] == {"test: orthanc_tests (2)": {"0.07": {"autoencoder": 41.0, "bm3d": 39.5}}}
    assert real["cpu_seconds_per_512_slice"] == {"autoencoder": 0.4, "bm3d": 8.0}
    assert "not clipped" in real["data"]
    assert "BM3D told the added noise's std" in real["data"] and "not run" not in real["data"]
    told = {"0.07": {"test": {f: {"autoencoder": (40.0, 0.9), "autoencoder_told": (40.1, 0.9)} for f in ("f0", "f1")}}}
    record_real_ct(card, loaded, told, {"test": sl}, 1, {"autoencoder": [0.3]})
    data = json.loads(card.read_text())["evaluation"]["real_ct"]["data"]
    assert "autoencoder_told told the added noise's std" in data and "BM3D not run in this measurement" in data
    assert "BM3D told" not in data and "autoencoder told nothing" in data
    # a candidate's figures never land in another model's card: refused in one line, the card untouched
    before = card.read_bytes()
    other = SimpleNamespace(sha256="b" * 64, path=tmp_path / "candidate.safetensors")
    refused = r"card.json: the card of weights a{16}, not of the weights measured \(.*candidate.safetensors, b{16}\)"
    with pytest.raises(SystemExit, match=refused + "; figures not recorded"):
        record_real_ct(card, other, results, {"test": sl}, 1, {"autoencoder": [0.3]})
    assert card.read_bytes() == before


def test_the_tables_print_as_many_decimals_as_asked(capsys):
    sl = [BenchSlice("validation", "g", f"f{k}", "1", np.zeros((4, 4), np.float32), 1.0) for k in range(2)]
    filters = {f: (30.0, 0.7) for f in ("gaussian", "average", "median", "bilateral", "nlm")}
    results = {"0.1": {"validation": {"f0": {"autoencoder": (36.92862, 0.9), "bm3d": (36.5, 0.8), **filters},
                                      "f1": {"autoencoder": (36.93350, 0.9), "bm3d": (36.7, 0.8), **filters}}}}
    print_tables(results, {"validation": sl})
    assert "| 36.93 / 0.900 | 36.60 / 0.800 | 30.00 / 0.700 |" in capsys.readouterr().out
    print_tables(results, {"validation": sl}, digits=4)
    out = capsys.readouterr().out
    assert "| 36.9311 / 0.900 | 36.6000 / 0.800 | 30.0000 / 0.700 |" in out and "| +0.3311 | +6.9311 |" in out


@pytest.mark.parametrize("conditioned", [False, True])
def test_the_qa_report_and_the_bench_score_the_same_slice_alike(tmp_path, ct_small, tiny_model, tiny_conditioned_model,
                                                                conditioned):
    """Same slice, same noise, same filter settings: the QA report's PSNR per method is the bench's,
    so their margins agree (the target is within 0.3 dB; here they are equal), for the model as
    delivered (noise estimated) and, for a noise-conditioned model, told the added noise."""
    import csv

    from bench.quality import Cache, nlm_told_the_estimate, score_level
    from pipeline.dicom.discovery import scan
    from pipeline.inference.denoiser import Denoiser
    from pipeline.qa.filters import FilterParams, classical_filters
    from pipeline.settings import Settings
    from pipeline.study_run import process_scan

    model = tiny_conditioned_model if conditioned else tiny_model
    (outcome,) = process_scan(scan(ct_small), tmp_path / "out", Settings(progress=False, qa_panels=0),
                              Denoiser(model, "cpu"))
    with open(outcome.folder / "qa_slices.csv", newline="") as fh:
        qa = {r["method"]: float(r["psnr_db"]) for r in csv.DictReader(fh)}
    small = pydicom_slices()[0]
    filters = {name: ((), f) for name, f in classical_filters(FilterParams(nlm_h=1.0)).items() if name != "nlm"}
    filters["nlm"] = (("auto",), nlm_told_the_estimate)  # the QA's default: told the noise estimate
    bench = score_level("0.07", [small], 1, Denoiser(model, "cpu"), filters, False, {}, Cache(None))
    assert set(qa) == set(bench[small.name]) and ("autoencoder_told" in qa) == conditioned
    for method, value in qa.items():
        assert value == pytest.approx(bench[small.name][method][0], abs=1e-3), method


def test_cache_keys_name_the_low_dose_simulation_so_an_earlier_cache_is_not_read():
    from bench.quality import score_key

    assert score_key("lowdose@20000", "s1", 0, "bm3d") == "score|lowdose@20000+whole-slice|s1|0|bm3d|"
    assert score_key("0.07", "s1", 0, "bm3d") == "score|0.07|s1|0|bm3d|"


def test_rows_group_slices_by_source_by_reconstruction_kernel_or_by_slice(capsys):
    sl = [BenchSlice("test", "orthanc_tests", f"f{k}", "1", np.zeros((4, 4), np.float32), 1.0, kernel)
          for k, kernel in enumerate(("BONE", "BONE", "B30s", ""))]
    per_slice = {f"f{k}": {"autoencoder": (30.0 + k, 0.9)} for k in range(4)}
    results = {"0.02": {"test": per_slice}}
    by_source = [(group, means["autoencoder"][0]) for _, _, group, means in rows(results, {"test": sl})]
    assert by_source == [("orthanc_tests (4)", 31.5)]
    by_kernel = [(group, means["autoencoder"][0]) for _, _, group, means in rows(results, {"test": sl}, "kernel")]
    assert by_kernel == [("kernel BONE (2)", 30.5), ("kernel B30s (1)", 32.0), ("kernel (not named) (1)", 33.0),
                         ("all (4)", 31.5)]
    by_slice = [(group, means["autoencoder"][0]) for _, _, group, means in rows(results, {"test": sl}, "slice")]
    assert by_slice[1:] == [("f1 (BONE) (1)", 31.0), ("f2 (B30s) (1)", 32.0), ("f3 (kernel not named) (1)", 33.0),
                            ("all (4)", 31.5)]
    with pytest.raises(ValueError, match="grouped by one of"):
        list(rows(results, {"test": sl}, "scanner"))


def test_bm3d_told_the_estimate_is_told_what_the_delivered_model_is_told_not_the_added_std():
    from types import SimpleNamespace

    from bench.quality import W, import_bm3d, told_methods
    from pipeline.qa.series import estimated_noise_unit

    rng = np.random.default_rng(3)
    clean = np.full((64, 64), 0.5, np.float32)
    clean[16:48, 16:48] = 0.6
    noisy = (clean + 0.03 * rng.standard_normal(clean.shape)).astype(np.float32)
    blind = SimpleNamespace(noise_map=False)
    assert set(told_methods(blind, "0.03", noisy.shape, use_bm3d=False)) == set()
    methods = told_methods(blind, "0.03", noisy.shape, use_bm3d=True, bm3d_estimate=True)
    assert set(methods) == {"bm3d", "bm3d_estimate"}
    estimate = estimated_noise_unit(noisy[None], W)
    assert 0.02 < estimate < 0.04  # reads the added noise
    bm3d = import_bm3d()
    # given the estimate in place of the std (score_level estimates each copy once). BM3D's library
    # aggregates on several threads, so two runs told the same differ by up to ~1e-5 (bm4d's profiles
    # say so); told 1 % more, or the added std 0.03, it differs by over 2e-3
    told = methods["bm3d_estimate"](noisy, estimate)
    np.testing.assert_allclose(told, bm3d.bm3d(noisy, sigma_psd=estimate), atol=1e-4)
    assert np.abs(told - bm3d.bm3d(noisy, sigma_psd=0.03)).max() > 1e-3
    assert np.abs(told - bm3d.bm3d(noisy, sigma_psd=estimate * 1.01)).max() > 1e-3
    assert not np.array_equal(methods["bm3d"](noisy, 0.3), methods["bm3d_estimate"](noisy, estimate))


def test_the_tables_add_the_margin_over_bm3d_told_the_estimate_when_it_ran(capsys):
    sl = [BenchSlice("test", "g", "f0", "1", np.zeros((4, 4), np.float32), 1.0)]
    filters = {f: (30.0, 0.7) for f in ("gaussian", "average", "median", "bilateral", "nlm")}
    means = {"autoencoder": (38.0, 0.9), "bm3d": (39.0, 0.9), "bm3d_estimate": (37.25, 0.9), **filters}
    assert margins({k: v[0] for k, v in means.items()})["bm3d_estimate"] == pytest.approx(0.75)
    print_tables({"0.02": {"test": {"f0": means}}}, {"test": sl})
    out = capsys.readouterr().out
    assert "| model - BM3D | model - BM3D told the estimate | model - best seed filter |" in out
    assert "| 37.25 / 0.900 |" in out and "| 30.00 / 0.700 | -1.00 | +0.75 | +8.00 | - |" in out  # no told row


def test_the_cards_text_names_what_each_bm3d_row_was_told():
    from bench.quality import told_text

    text = told_text({"autoencoder", "bm3d", "bm3d_estimate"})
    assert "BM3D told the added noise's std" in text
    assert "bm3d_estimate told the noise estimated from the copy, as the autoencoder is" in text
    assert "bm3d_estimate" not in told_text({"autoencoder", "bm3d"})


def test_bm3d_told_the_estimate_is_cached_under_the_estimate_it_was_told(tmp_path, tiny_conditioned_model):
    from bench.quality import Cache, W, score_level
    from pipeline.inference.denoiser import Denoiser
    from pipeline.qa.series import estimated_noise_unit

    small = pydicom_slices()[0]
    cache = Cache(tmp_path / "cache.json")
    denoiser = Denoiser(tiny_conditioned_model, "cpu")
    first = score_level("0.07", [small], 1, denoiser, {}, False, {}, cache, bm3d_estimate=True)
    sigma = estimated_noise_unit(noisy_copy(small, "0.07", 0)[0][None], W)
    key = f"score|0.07|{small.name}|0|bm3d_estimate|sigma {sigma:.6g}"
    assert json.loads((tmp_path / "cache.json").read_text())[key][0] == first[small.name]["bm3d_estimate"][0]
    assert first[small.name]["bm3d_estimate"][0] > first[small.name]["noisy"][0] + 5  # it denoises
    from bench.quality import import_bm3d
    from pipeline.qa.metrics import psnr

    told_estimate = import_bm3d().bm3d(noisy_copy(small, "0.07", 0)[0], sigma_psd=sigma)
    assert first[small.name]["bm3d_estimate"][0] == pytest.approx(psnr(small.reference, np.clip(told_estimate, 0, 1)),
                                                                  abs=1e-4)  # told the estimate, not the std
    cache.data[key] = [1.0, 0.5, None]  # read back from the cache, not rerun
    again = score_level("0.07", [small], 1, denoiser, {}, False, {}, cache, bm3d_estimate=True)
    assert again[small.name]["bm3d_estimate"] == (1.0, 0.5)
