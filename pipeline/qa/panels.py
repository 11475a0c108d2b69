"""QA figures of one series: what the model and the classical filters do to representative slices.

``qa_<name>_slice<NNNN>.png`` (NNNN = 1-based slice number), one per :class:`PanelSlice`, 2000 x 1350 px:

1. reference, the noisy QA copy, the autoencoder and every classical filter in the display window
   (default L40 W400 HU, soft tissue), each captioned with its PSNR / SSIM against the reference;
2. the same images in the normalization window (what the model sees and the QA measures);
3. ``|method - reference|`` in HU on the fixed scale 0..``diff_range_hu``, so panels of different
   slices and runs compare by colour;
4. original vs denoised without synthetic noise: what the model removes from the real scan, as
   ``denoised - original`` in HU on the fixed scale -``diff_range_hu``/2..+``diff_range_hu``/2, with
   the slice's noise in uniform soft tissue (the regions outlined on the original) and its strong-edge
   gradient, original and denoised (:mod:`pipeline.qa.scan_measures`).

``qa_<name>_psnr.png`` (1600 x 600 px): PSNR per slice along the stack, one line per method.

Figures hold UIDs and numbers only: no patient data reaches this module.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_file
from pipeline.inference.window import Window, hu_to_unit, unit_to_hu
from pipeline.qa.scan_measures import REGION_PX, ScanMeasures
from pipeline.qa.series import METHODS, SliceScore

DPI = 100
FONT_PT = 10.0  # about 14 px at DPI 100: readable at 100 % zoom
PANEL_SIZE_IN = (20.0, 13.5)
PSNR_SIZE_IN = (16.0, 6.0)
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass
class PanelSlice:
    """One slice of a series, ready to draw.

    ``reference_hu`` and ``denoised_hu``: (H, W) float32 HU; ``denoised_hu`` is the model's output on
    the original slice (no synthetic noise). ``qa_unit``: method -> (H, W) float32 in [0, 1] through
    the normalization window (the noisy QA copy and every method's result on it). ``scores``:
    method -> (PSNR dB, SSIM) against the reference, for every key of ``qa_unit``. ``scan``: the
    real-scan noise and edge measures of the slice (original vs denoised), when measured.
    """

    index: int
    reference_hu: np.ndarray
    denoised_hu: np.ndarray
    qa_unit: dict[str, np.ndarray]
    scores: dict[str, tuple[float, float]]
    scan: ScanMeasures | None = None


def panel_slices(n: int, count: int = 3) -> list[int]:
    """0-based indices of ``count`` representative slices of a stack of ``n``: the positions
    ``floor(k n / (count + 1))``, k = 1..count (quartiles for count 3), sorted, without repeats."""
    if n < 1:
        raise ValueError(f"a stack needs at least one slice, got n={n}")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    return sorted({k * n // (count + 1) for k in range(1, count + 1)})


def check_name(name: str) -> str:
    """Return ``name`` if it may form part of a file name (letters, digits, '.', '-', '_'; at most
    128 characters), else raise ``ValueError``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"panel name {str(name)[:80]!r} must be 1-128 letters, digits, '.', '-' or '_' "
                         "(it becomes part of a file name); pass a UID")
    return name


def caption(method: str, score: tuple[float, float]) -> str:
    """Two-line caption: the method, then its PSNR (dB) and SSIM against the reference."""
    psnr, ssim = score
    return f"{method}\nPSNR {psnr:.2f} dB  SSIM {ssim:.3f}"


def panel_path(folder: Path, name: str, index: int) -> Path:
    """Where the panel of 0-based slice ``index`` goes (the file name counts from 1)."""
    return Path(folder) / f"qa_{check_name(name)}_slice{index + 1:04d}.png"


def psnr_plot_path(folder: Path, name: str) -> Path:
    return Path(folder) / f"qa_{check_name(name)}_psnr.png"


def write_series_panels(folder: Path, name: str, slices: list[PanelSlice], scores: list[SliceScore], window: Window,
                        display: tuple[float, float] = (40.0, 400.0), diff_range_hu: float = 200.0) -> list[Path]:
    """Write a panel per slice of ``slices`` and the PSNR-per-slice plot of ``scores`` (one series)
    into ``folder``, each file atomically; returns the paths, panels first in the order given.

    ``display`` is (level, width) in HU; ``window`` is the normalization window of ``qa_unit``.
    """
    check_name(name)
    level, width = (float(v) for v in display)
    if not (math.isfinite(level) and math.isfinite(width) and width > 0):
        raise ValueError(f"display window must be a finite (level, width) with width > 0, got {display}")
    if not (math.isfinite(diff_range_hu) and diff_range_hu > 0):
        raise ValueError(f"diff_range_hu must be finite and > 0, got {diff_range_hu}")
    for ps in slices:
        _check_slice(ps)
    indices = [ps.index for ps in slices]
    if len(set(indices)) != len(indices):
        raise ValueError(f"{name}: slice indices repeat ({sorted(indices)}); one panel per slice")
    series = {s.series_uid for s in scores}
    if len(series) > 1:
        raise ValueError(f"{name}: scores of {len(series)} series given; pass the scores of one series")

    folder = Path(folder)
    written = []
    for ps in slices:
        fig = _figure(PANEL_SIZE_IN)
        _draw_panel(fig, ps, name, window, (level, width), float(diff_range_hu))
        written.append(_save(fig, panel_path(folder, name, ps.index)))
    fig = _figure(PSNR_SIZE_IN)
    _draw_psnr(fig, name, scores, indices)
    written.append(_save(fig, psnr_plot_path(folder, name)))
    return written


def _check_slice(ps: PanelSlice) -> None:
    where = f"slice index {ps.index}"
    if ps.index < 0:
        raise ValueError(f"{where}: index must be >= 0")
    shape = np.shape(ps.reference_hu)
    if len(shape) != 2:
        raise ValueError(f"{where}: reference_hu must be (H, W), got shape {shape}")
    arrays = {"denoised_hu": ps.denoised_hu, **{f"qa_unit[{m!r}]": a for m, a in ps.qa_unit.items()}}
    for what, a in arrays.items():
        if np.shape(a) != shape:
            raise ValueError(f"{where}: {what} has shape {np.shape(a)}, reference_hu {shape}")
    missing = [m for m in ps.qa_unit if m not in ps.scores]
    if missing:
        raise ValueError(f"{where}: no (PSNR, SSIM) for {missing}; scores must cover every key of qa_unit")


LINE_COLOURS = [f"C{k}" for k in (0, 1, 2, 3, 4, 5, 6, 8, 9)]  # matplotlib's cycle without its grey (C7: the marks)


def method_colour(method: str) -> str:
    """The PSNR plot's colour of one of :data:`METHODS`."""
    return LINE_COLOURS[METHODS.index(method) % len(LINE_COLOURS)]


def _ordered(methods: Iterable[str]) -> list[str]:
    """The project's method order (noisy, autoencoder, filters), then any others by name."""
    present = set(methods)
    return [m for m in METHODS if m in present] + sorted(present - set(METHODS))


def _figure(size_in: tuple[float, float]):
    # A bare Figure on an Agg canvas, not pyplot: nothing is registered globally, nothing leaks
    # between calls, and the process's backend stays whatever it is.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size_in, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    atomic_file(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    return path


def _image(ax, img: np.ndarray, lo: float, hi: float, title: str, cmap: str = "gray"):
    shown = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
    ax.set_title(title, fontsize=FONT_PT)
    ax.set_xticks([])
    ax.set_yticks([])
    return shown


def _colorbar(fig, shown, host, bounds: list[float], orientation: str, label: str) -> None:
    # Drawn inside a spare cell: a colorbar attached to image axes would make the layout engine
    # narrow whole columns of the grid.
    bar = fig.colorbar(shown, cax=host.inset_axes(bounds), orientation=orientation)
    bar.set_label(label, fontsize=FONT_PT)
    bar.ax.tick_params(labelsize=FONT_PT)


def _draw_panel(fig, ps: PanelSlice, name: str, window: Window, display: tuple[float, float],
                diff_range_hu: float) -> None:
    level, width = display
    d_lo, d_hi = level - width / 2, level + width / 2
    methods = _ordered(ps.qa_unit)
    cols = max(1 + len(methods), 4)  # row 4 uses 3 cells and a colorbar cell
    axes = fig.subplots(4, cols, squeeze=False)
    reference = np.asarray(ps.reference_hu, np.float32)
    # The QA reference is the slice clipped to the window: differences are taken against what PSNR sees.
    qa_reference = unit_to_hu(hu_to_unit(reference, window, clip=True), window)
    result_hu = {m: unit_to_hu(ps.qa_unit[m], window) for m in methods}
    display_label = f"display L{level:g} W{width:g} HU"
    norm_label = f"normalization window {window}"

    for row, (lo, hi) in enumerate([(d_lo, d_hi), (window.low, window.high)]):
        _image(axes[row, 0], reference, lo, hi, "reference (original slice)")
        for col, m in enumerate(methods, 1):
            _image(axes[row, col], result_hu[m], lo, hi, caption(m, ps.scores[m]) if row == 0 else m)
    axes[0, 0].set_ylabel(display_label, fontsize=FONT_PT)
    axes[1, 0].set_ylabel(norm_label, fontsize=FONT_PT)

    axes[2, 0].set_axis_off()
    axes[2, 0].text(0.5, 0.75, f"|method - reference|\nin HU, fixed scale\n0 to {diff_range_hu:g} HU",
                    ha="center", va="center", fontsize=FONT_PT, transform=axes[2, 0].transAxes)
    shown = None
    for col, m in enumerate(methods, 1):
        shown = _image(axes[2, col], np.abs(result_hu[m] - qa_reference), 0.0, diff_range_hu,
                       f"|{m} - reference|", cmap="magma")
    if shown is not None:
        _colorbar(fig, shown, axes[2, 0], [0.1, 0.3, 0.8, 0.08], "horizontal", "absolute difference (HU)")

    denoised = np.asarray(ps.denoised_hu, np.float32)
    half = diff_range_hu / 2  # same span as the absolute maps: one colour step means the same HU
    before, after = _scan_lines(ps.scan)
    _image(axes[3, 0], reference, d_lo, d_hi, f"original\n{before}" if before else f"original\n{display_label}")
    _image(axes[3, 1], denoised, d_lo, d_hi, f"denoised (no synthetic noise)\n{after}" if after
           else f"denoised (no synthetic noise)\n{display_label}")
    if ps.scan is not None:
        from matplotlib.patches import Rectangle

        for r, c in ps.scan.regions:
            axes[3, 0].add_patch(Rectangle((c - 0.5, r - 0.5), REGION_PX, REGION_PX, fill=False, ec="yellow", lw=0.8))
    shown = _image(axes[3, 2], denoised - reference, -half, half,
                   f"denoised - original\n-{half:g} to +{half:g} HU", cmap="RdBu_r")
    _colorbar(fig, shown, axes[3, 3], [0.05, 0.05, 0.08, 0.9], "vertical", "denoised - original (HU)")
    axes[3, 0].set_ylabel("original vs denoised", fontsize=FONT_PT)
    for ax in axes[3, 3:]:
        ax.set_axis_off()
    for col in range(1 + len(methods), cols):
        for row in range(3):
            axes[row, col].set_axis_off()

    fig.suptitle(f"{name}  slice {ps.index + 1}  |  rows 1, 4: {display_label}  |  row 2: {norm_label}  |  "
                 f"PSNR/SSIM against the reference, on a seeded noisy copy", fontsize=FONT_PT + 2)


def _scan_lines(scan: ScanMeasures | None) -> tuple[str, str]:
    """Caption lines of row 4: noise (HU std in the outlined uniform regions) and edge gradient."""
    if scan is None:
        return "", ""

    def lines(noise: float, edge: float) -> str:  # two short lines: the panel columns are narrow
        shown = f"noise {noise:.1f} HU" if math.isfinite(noise) else "no uniform soft tissue"
        return f"{shown}\nedges {edge:.0f} HU/mm"

    kept = f" ({scan.edge_kept:.0%})" if math.isfinite(scan.edge_kept) else ""
    return lines(scan.noise_hu_before, scan.edge_before), lines(scan.noise_hu_after, scan.edge_after) + kept


def _draw_psnr(fig, name: str, scores: Sequence[SliceScore], marks: Sequence[int]) -> None:
    ax = fig.subplots()
    ax.tick_params(labelsize=FONT_PT)
    by_method: dict[str, list[SliceScore]] = defaultdict(list)
    for s in scores:
        by_method[s.method].append(s)
    if not by_method:
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"{name}: no QA scores", ha="center", va="center", fontsize=FONT_PT + 4,
                transform=ax.transAxes)
        return
    extra = 0
    for m in _ordered(by_method):
        rows = sorted(by_method[m], key=lambda s: s.index)
        xs = [s.index + 1 for s in rows]
        ys = [s.psnr if math.isfinite(s.psnr) else math.nan for s in rows]  # identical images: no point
        if m in METHODS:  # one colour per method whatever else is plotted, so plots compare at a glance
            colour = method_colour(m)
        else:
            colour, extra = LINE_COLOURS[(len(METHODS) + extra) % len(LINE_COLOURS)], extra + 1
        ax.plot(xs, ys, label=m, color=colour, lw=2.5 if m == "autoencoder" else 1.5,
                marker="o" if len(xs) <= 60 else None, ms=3)
    for i in marks:
        ax.axvline(i + 1, color="0.55", ls=":", lw=1)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # slice numbers, not fractions
    ax.set_xlabel("slice number (1 = first of the stack, as in the panel file names)", fontsize=FONT_PT)
    ax.set_ylabel("PSNR against the reference (dB)", fontsize=FONT_PT)
    ax.set_title(f"{name}: PSNR per slice (dotted lines: slices with a panel)", fontsize=FONT_PT + 2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=FONT_PT, loc="center left", bbox_to_anchor=(1.01, 0.5))
