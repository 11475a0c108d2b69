"""Noise shaped by a reconstruction kernel (pipeline/synthetic/kernel_noise.py): its spectrum, its
whiteness as the noise estimate reads it, BM3D's spectrum convention, QA copies and training patches."""
import numpy as np
import pytest

from pipeline.inference.noise_level import slice_noise
from pipeline.qa.noise import NoiseModel
from pipeline.synthetic.kernel_noise import KERNELS, bm3d_psd, cutoff, kernel_noise


def _radial_power(noise: np.ndarray, bands: int = 10) -> np.ndarray:
    power = np.abs(np.fft.fft2(noise)) ** 2
    f = np.hypot(np.fft.fftfreq(noise.shape[0])[:, None], np.fft.fftfreq(noise.shape[1])[None, :])
    edges = np.linspace(0, 0.5, bands + 1)
    return np.array([power[(f >= lo) & (f < hi)].mean() for lo, hi in zip(edges[:-1], edges[1:])])


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_the_noise_has_the_std_asked_and_its_spectrum_peaks_near_the_cutoff(kernel):
    noise = kernel_noise((256, 256), kernel, 30.0, seed=3)
    assert noise.dtype == np.float32 and float(noise.std()) == pytest.approx(30.0, rel=1e-4)
    assert float(noise.mean()) == pytest.approx(0.0, abs=1.0)
    power = _radial_power(noise)
    peak = (np.argmax(power) + 0.5) * 0.05  # band centre, cycles per pixel
    assert peak == pytest.approx(cutoff(kernel) / np.sqrt(2), abs=0.05)  # f exp(-(f/fc)^2) peaks at fc/sqrt(2)
    assert power[-1] < power.max() and (kernel != "soft" or power[-1] < 1e-4 * power.max())  # apodized
    np.testing.assert_array_equal(noise, kernel_noise((256, 256), kernel, 30.0, seed=3))  # seeded


def test_a_soft_kernel_reads_blotchy_and_a_sharp_one_fine_as_real_scans_do():
    disc = np.where(np.hypot(*np.mgrid[-128:128, -128:128]) < 110, 40.0, -1000.0).astype(np.float32)
    read = {k: slice_noise(disc + kernel_noise(disc.shape, k, 40.0, seed=5)) for k in KERNELS}
    assert all(r.sigma_hu == pytest.approx(40, rel=0.15) for r in read.values())
    assert read["soft"].whiteness < 0.55 < read["standard"].whiteness < 0.95 < read["sharp"].whiteness


def test_bm3d_is_told_the_spectrum_in_its_own_convention():
    white_like = bm3d_psd((64, 32), 0.5, 0.1)  # any kernel: the mean PSD is sigma^2 x H x W
    assert float(white_like.mean()) == pytest.approx(0.01 * 64 * 32, rel=1e-6)
    soft = bm3d_psd((64, 64), "soft", 0.05)
    assert soft[0, 0] == 0.0 and soft.shape == (64, 64)  # a ramp: no power at DC
    assert NoiseModel("soft", 0.05).bm3d_psd((64, 64)) == pytest.approx(soft)
    assert NoiseModel("gaussian", 0.05).bm3d_psd((64, 64)) is None  # told the std
    assert NoiseModel("lowdose").bm3d_psd((64, 64)) is None


def test_bm3d_told_the_spectrum_beats_bm3d_told_the_std_on_soft_kernel_noise():
    pytest.importorskip("bm3d")
    from bench.quality import import_bm3d

    bm3d = import_bm3d()
    yy, xx = np.mgrid[:64, :64]
    clean = (0.3 + 0.4 * ((yy - 32) ** 2 + (xx - 32) ** 2 < 400)).astype(np.float64)
    noisy = clean + kernel_noise(clean.shape, "soft", 0.05, seed=8)
    err = {name: float(np.mean((bm3d.bm3d(noisy, sigma_psd=told) - clean) ** 2))
           for name, told in (("std", 0.05), ("spectrum", bm3d_psd(clean.shape, "soft", 0.05)))}
    assert err["spectrum"] < 0.7 * err["std"]


def test_qa_copies_with_kernel_noise_and_bad_kernels():
    unit = np.full((64, 64), 0.5, np.float32)
    noisy, told = NoiseModel("soft", 0.03).noisy(unit, unit * 2000 - 1000, 2000.0, 0.7, seed=4)
    assert told == 0.03 and float((noisy - unit).std()) == pytest.approx(0.03, rel=1e-3)
    assert NoiseModel("sharp", 0.03).label == "sharp-kernel"
    with pytest.raises(ValueError, match="gaussian, lowdose, soft, standard, sharp"):
        NoiseModel("bone")
    with pytest.raises(ValueError, match="cutoff must be in \\(0, 0.5\\]"):
        kernel_noise((8, 8), 0.9, 1.0, seed=0)
    with pytest.raises(ValueError, match="kernel must be one of soft, standard, sharp"):
        cutoff("lung")


def test_training_patches_get_kernel_noise_in_the_share_asked():
    from models.training.config import TrainConfig
    from models.training.data import PatchStream

    tiny = dict(pool_size=4, pool_refresh=1000, patch=48, val_slices=1)
    cfg = TrainConfig(sigma_min=0.04, sigma_max=0.04, kernel_fraction=1.0, kernel_fc_min=0.1, kernel_fc_max=0.1,
                      batch_size=8, **tiny)
    noisy, clean, levels = PatchStream(cfg).batch(0)
    noise = (noisy - clean).numpy()[:, 0]
    inside = ((clean > 0.2) & (clean < 0.8)).numpy()[:, 0]
    assert float(noise[inside].std()) == pytest.approx(0.045, rel=0.15) and np.allclose(levels.numpy(), 0.045)
    lag1 = np.mean([np.corrcoef(n[:, 1:].ravel(), n[:, :-1].ravel())[0, 1] for n in noise])
    assert lag1 > 0.5  # blotchy: neighbours move together (white noise: about 0)
    mixed = PatchStream(TrainConfig(sigma_min=0.04, sigma_max=0.04, kernel_fraction=0.5, kernel_fc_max=0.1,
                                    **dict(tiny, batch_size=64))).batch(1)
    n = (mixed[0] - mixed[1]).numpy()[:, 0]
    corr = np.array([np.corrcoef(p[:, 1:].ravel(), p[:, :-1].ravel())[0, 1] for p in n])
    assert 0.3 < float((corr > 0.3).mean()) < 0.7
