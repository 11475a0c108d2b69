from pathlib import Path

import matplotlib.colors as mcolors
import matplotlib.figure
import matplotlib.image as mpimg
import numpy as np
import pytest

from pipeline.inference.window import Window, hu_to_unit
from pipeline.qa.metrics import psnr, ssim
from pipeline.qa.panels import DPI, PANEL_SIZE_IN, PSNR_SIZE_IN, PanelSlice, caption, panel_slices, write_series_panels
from pipeline.qa.series import METHODS, SliceScore

WINDOW = Window(-1000.0, 1000.0)
PANEL_PX = (round(PANEL_SIZE_IN[1] * DPI), round(PANEL_SIZE_IN[0] * DPI))  # (rows, columns)
PSNR_PX = (round(PSNR_SIZE_IN[1] * DPI), round(PSNR_SIZE_IN[0] * DPI))


def synthetic_series(n: int = 4, size: int = 64, methods=METHODS, series: str = "1.2.3.4"):
    """A disc phantom of ``n`` slices, each method a known perturbation of the reference, with its
    real PSNR/SSIM; returns (PanelSlice per quartile slice, every SliceScore)."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.4 * size) ** 2
    slices, scores = [], []
    for i in range(n):
        hu = np.where(disc, 40.0 + 5 * i, -1000.0).astype(np.float32)
        hu[size // 3:size // 3 + 6, size // 2:size // 2 + 6] = 400.0
        ref = hu_to_unit(hu, WINDOW, clip=True)
        qa = {m: np.clip(ref + rng.normal(0, 0.005 * (k + 1), ref.shape), 0, 1).astype(np.float32)
              for k, m in enumerate(methods)}
        per = {m: (psnr(ref, a), ssim(ref, a)) for m, a in qa.items()}
        scores += [SliceScore(series, f"{series}.{i}", i, m, *per[m]) for m in methods]
        if i in panel_slices(n):
            denoised = hu + rng.normal(0, 10, hu.shape).astype(np.float32)
            slices.append(PanelSlice(i, hu, denoised, qa, per))
    return slices, scores


def gray(path: Path) -> np.ndarray:
    return mpimg.imread(path)[..., :3].mean(axis=2)


def has_colour(path: Path, colour: str, tol: float = 0.02) -> bool:
    rgb = mpimg.imread(path)[..., :3]
    return bool((np.abs(rgb - np.asarray(mcolors.to_rgb(colour))).max(axis=2) < tol).any())


def test_panel_slices_are_the_quartiles_of_the_stack():
    assert panel_slices(1) == [0]
    assert panel_slices(2) == [0, 1]
    assert panel_slices(4) == [1, 2, 3]
    assert panel_slices(100) == [25, 50, 75]
    assert panel_slices(9, count=1) == [4]
    for n in range(1, 50):
        picked = panel_slices(n)
        assert picked == sorted(set(picked)) and all(0 <= i < n for i in picked)
    with pytest.raises(ValueError, match="at least one slice"):
        panel_slices(0)
    with pytest.raises(ValueError, match="count"):
        panel_slices(10, count=0)


def test_panels_and_psnr_plot_have_the_documented_size_and_content(tmp_path):
    slices, scores = synthetic_series(n=4)
    paths = write_series_panels(tmp_path, "1.2.3.4", slices, scores, WINDOW)
    assert [p.name for p in paths] == ["qa_1.2.3.4_slice0002.png", "qa_1.2.3.4_slice0003.png",
                                       "qa_1.2.3.4_slice0004.png", "qa_1.2.3.4_psnr.png"]
    for p in paths[:-1]:
        assert gray(p).shape == PANEL_PX
        assert gray(p).var() > 0.01  # images, not a blank canvas
    assert gray(paths[-1]).shape == PSNR_PX and gray(paths[-1]).var() > 0.001
    # nothing but the outputs: no temporaries left behind
    assert sorted(tmp_path.iterdir()) == sorted(paths)
    # the difference rows and their colour scales are drawn (each colorbar holds its end colours)
    assert has_colour(paths[0], mcolors.to_hex(matplotlib.colormaps["magma"](1.0)))
    assert has_colour(paths[0], mcolors.to_hex(matplotlib.colormaps["RdBu_r"](0.0)))


def test_captions_carry_the_scores_and_rendering_is_reproducible(tmp_path):
    assert caption("autoencoder", (31.234, 0.91234)) == "autoencoder\nPSNR 31.23 dB  SSIM 0.912"
    assert caption("noisy", (float("inf"), 1.0)) == "noisy\nPSNR inf dB  SSIM 1.000"
    slices, _ = synthetic_series(n=1)
    (a,) = write_series_panels(tmp_path / "a", "s", slices, [], WINDOW)[:1]
    (b,) = write_series_panels(tmp_path / "b", "s", slices, [], WINDOW)[:1]
    np.testing.assert_array_equal(mpimg.imread(a), mpimg.imread(b))  # same input, same pixels
    slices[0].scores["autoencoder"] = (12.5, 0.25)
    (c,) = write_series_panels(tmp_path / "c", "s", slices, [], WINDOW)[:1]
    changed = np.abs(mpimg.imread(a) - mpimg.imread(c)).max(axis=2) > 0
    # only the caption's text changed: a few hundred pixels, not the images
    assert 0 < changed.sum() < 0.005 * changed.size


def test_psnr_plot_has_a_line_for_each_scored_method(tmp_path):
    _, scores = synthetic_series(n=6)
    all_methods = write_series_panels(tmp_path / "all", "s", [], scores, WINDOW)[-1]
    two = [s for s in scores if s.method in ("autoencoder", "median")]
    only_two = write_series_panels(tmp_path / "two", "s", [], two, WINDOW)[-1]
    from pipeline.qa.panels import method_colour

    cycle = [method_colour(m) for m in METHODS]  # each method keeps its colour, none of them the marks' grey
    assert len(set(cycle)) == len(METHODS) and "C7" not in cycle
    assert all(has_colour(all_methods, c) for c in cycle)
    assert [has_colour(only_two, c) for c in cycle] == [m in ("autoencoder", "median") for m in METHODS]
    empty = write_series_panels(tmp_path / "none", "s", [], [], WINDOW)
    assert [p.name for p in empty] == ["qa_s_psnr.png"] and gray(empty[0]).shape == PSNR_PX


@pytest.mark.parametrize("name", ["", "../x", "a/b", "a b", "x\n", "Müller", "a" * 129])
def test_a_name_that_cannot_be_a_file_name_is_refused(tmp_path, name):
    slices, scores = synthetic_series(n=1)
    with pytest.raises(ValueError, match="panel name"):
        write_series_panels(tmp_path, name, slices, scores, WINDOW)
    assert list(tmp_path.iterdir()) == []


def test_inconsistent_inputs_are_refused_before_anything_is_written(tmp_path):
    slices, scores = synthetic_series(n=1)
    del slices[0].scores["median"]
    with pytest.raises(ValueError, match="median"):
        write_series_panels(tmp_path, "s", slices, scores, WINDOW)
    slices, _ = synthetic_series(n=1)
    slices[0].denoised_hu = slices[0].denoised_hu[:-1]
    with pytest.raises(ValueError, match="denoised_hu"):
        write_series_panels(tmp_path, "s", slices, scores, WINDOW)
    _, other = synthetic_series(n=1, series="9.9")
    with pytest.raises(ValueError, match="one series"):
        write_series_panels(tmp_path, "s", [], scores + other, WINDOW)
    with pytest.raises(ValueError, match="display"):
        write_series_panels(tmp_path, "s", [], scores, WINDOW, display=(40.0, 0.0))
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def disk_full(self, fname, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError("No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", disk_full)
    slices, scores = synthetic_series(n=1)
    with pytest.raises(OSError, match="No space"):
        write_series_panels(tmp_path, "s", slices, scores, WINDOW)
    assert list(tmp_path.iterdir()) == []


def test_row_four_shows_the_real_scan_noise_and_edges_and_outlines_the_uniform_regions(tmp_path):
    from pipeline.qa.panels import _scan_lines
    from pipeline.qa.scan_measures import ScanMeasures

    scan = ScanMeasures(18.04, 9.51, 400.0, 372.0, [(10, 12), (30, 40)])
    assert _scan_lines(scan) == ("noise 18.0 HU\nedges 400 HU/mm", "noise 9.5 HU\nedges 372 HU/mm (93%)")
    assert _scan_lines(ScanMeasures(float("nan"), float("nan"), 400.0, 400.0))[0] == \
        "no uniform soft tissue\nedges 400 HU/mm"
    slices, _ = synthetic_series(n=1)
    (plain,) = write_series_panels(tmp_path / "a", "s", slices, [], WINDOW)[:1]
    slices[0].scan = scan
    (measured,) = write_series_panels(tmp_path / "b", "s", slices, [], WINDOW)[:1]
    assert not has_colour(plain, "yellow", 0.05) and has_colour(measured, "yellow", 0.05)  # the region outlines
