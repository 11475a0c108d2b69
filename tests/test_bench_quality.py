"""bench/quality.py: its real test slices and the margins it reports against the targets."""
import json

import numpy as np
import pytest

from bench.quality import REAL_SLICES, _noisy, margins, real_slice, record_real_ct


def test_margins_against_bm3d_seed_filters_and_the_best_classical_method():
    psnr = {"noisy": 25.0, "autoencoder": 35.0, "gaussian": 30.0, "average": 29.0, "median": 31.0,
            "bilateral": 30.5, "nlm": 32.0, "bm3d": 34.2}
    assert margins(psnr) == pytest.approx({"bm3d": 0.8, "seed filters": 4.0, "best classical": 0.8})
    del psnr["bm3d"]  # --no-bm3d
    assert margins(psnr) == pytest.approx({"seed filters": 4.0, "best classical": 3.0})


@pytest.mark.parametrize(("name", "shape", "pixel_mm"), [("CT_small", (128, 128), 0.661468),
                                                          ("head512", (512, 512), 0.431)])
def test_real_slices_are_read_with_their_pixel_size(name, shape, pixel_mm):
    ref, mm = real_slice(name)
    assert name in REAL_SLICES and ref.shape == shape and mm == pytest.approx(pixel_mm)
    assert ref.dtype == np.float32 and 0 <= ref.min() and ref.max() <= 1 and ref.std() > 0.1


def test_low_dose_noise_follows_the_slice_pixel_size():
    ref, mm = real_slice("head512")
    sigmas = [_noisy(ref, "lowdose@1e5", 1, pixel)[1] for pixel in (mm, 0.75)]
    # the same matrix read as 0.75 mm pixels is a 1.7x larger head: longer paths, fewer photons
    assert sigmas[1] > 1.5 * sigmas[0]
    noisy, sigma = _noisy(ref, "0.05", 1, mm)
    assert sigma == 0.05 and abs(float((noisy - ref)[200:300, 200:300].std()) - 0.05) < 0.005


def test_real_slice_figures_are_recorded_in_the_model_card(tmp_path):
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"name": "m", "evaluation": {"by_sigma": {"0.07": {}}}}))
    means = {("0.07", "synthetic"): {"autoencoder": 40.0}, ("0.07", "CT_small"): {"autoencoder": 34.691},
             ("lowdose@20000", "head512"): {"autoencoder": 41.0, "bm3d": 35.0}}
    record_real_ct(card, means, slices=3)
    written = json.loads(card.read_text())
    assert written["evaluation"]["by_sigma"] == {"0.07": {}}  # the rest of the card is kept
    real = written["evaluation"]["real_ct"]
    assert real["psnr_db"] == {"CT_small": {"0.07": {"autoencoder": 34.69}},
                               "head512": {"lowdose_i0_20000": {"autoencoder": 41.0, "bm3d": 35.0}}}
    assert "x 3 noise seeds" in real["data"] and "J2K_pixelrep_mismatch.dcm" in real["data"]
