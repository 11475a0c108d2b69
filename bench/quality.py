"""Quality benchmark on real CT under the fair yardstick: the model against classical denoisers.

    python -m bench.quality [--parts validation test] [--levels 0.02 0.05 0.07 0.10 lowdose@20000 soft@0.03]
                            [--seeds 1] [--no-bm3d] [--weights W] [--card models/weights/ct_denoiser.json] [--digits 4]
                            [--by kernel] [--bm3d-estimate]
                            [--qa-check] [--realct-dir ../shared/data/realct]

Data: the real CT set's ``validation`` and ``test`` parts (:mod:`models.training.realct`: split
by source; the model is never trained on them, and no choice is made on the test part), and
pydicom's two real slices (``pydicom``: CT_small.dcm and the 512x512 head J2K_pixelrep_mismatch.dcm),
which need no ``../shared``. Yardstick (:mod:`pipeline.qa.noise`): noise added in HU to the slice as
stored (Gaussian sigma as a fraction of the window [-1000, 1000] HU, the low-dose model at the
slice's own pixel size, or ``soft@0.03``: correlated noise of a smooth kernel's spectrum, for which
BM3D is told that spectrum) and never clipped; every method gets that same noisy image, seeded from the
slice's SOPInstanceUID as in the QA report (``--seeds`` > 1 adds further seeds). The model runs
twice, as in the QA report: ``autoencoder`` as the derived series runs it (told nothing: the noise
is estimated from the noisy copy, strength ``full``; the QA report's own function), and
``autoencoder_told``, told the std of the added noise, as BM3D is; outputs and reference are
clipped to the window for PSNR (data range 1) and SSIM. Each seed filter uses its best-PSNR
setting for the noise level, tuned on the validation part with other noise seeds (so the test part
stays untouched by any choice); non-local means, which needs the noise level, is told the noise
estimate as in the QA report (``h`` = the estimated std, pipeline/qa/filters.py). Prints mean PSNR /
SSIM per part and source (``--by kernel``: per reconstruction kernel), the model's margins over BM3D
and the seed filters, and CPU seconds per 512x512 slice. ``--qa-check`` runs the pipeline's own QA
(``DenoiseStudy``'s code, default ``[qa_filters]``) on the test slices and compares its margins with
the bench's. ``--card`` records the figures in that model card (``evaluation.real_ct``); refused for a card
that is not the measured weights' (its ``weights_sha256``).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.card import record
from bench.filter_sweep import candidates
from models.store import load_model
from models.training import realct
from pipeline.atomic import write_json
from pipeline.dicom.discovery import scan
from pipeline.dicom.reader import load_series
from pipeline.inference.denoiser import Denoiser
from pipeline.inference.noise_map import DEFAULT_MODE as NOISE_MAP_DEFAULT
from pipeline.inference.noise_map import MODES as NOISE_MAP_MODES
from pipeline.inference.polyphase import DEFAULT_MODE as BLOTCHY_DEFAULT
from pipeline.inference.polyphase import MODES as BLOTCHY_MODES
from pipeline.inference.window import Window, hu_to_unit
from pipeline.qa.filters import FilterParams, classical_filters
from pipeline.qa.metrics import psnr
from pipeline.qa.noise import NoiseModel, seed_from_uid
from pipeline.qa.series import estimated_noise_unit
from pipeline.qa.yardstick import score_methods
from pipeline.study_run import delivered_model

W = Window()
REAL_SLICES = {"CT_small": "CT_small.dcm", "head512": "J2K_pixelrep_mismatch.dcm"}
SEED_FILTERS = ("gaussian", "average", "median", "bilateral")


@dataclass(frozen=True)
class BenchSlice:
    part: str  # validation, test or pydicom
    group: str  # the source
    name: str
    uid: str  # SOPInstanceUID: seeds the noise as the QA report does
    hu: np.ndarray
    pixel_mm: float
    kernel: str = ""  # reconstruction kernel (ConvolutionKernel's first value; "" when not named)

    @property
    def unit(self) -> np.ndarray:
        return hu_to_unit(self.hu, W)

    @property
    def reference(self) -> np.ndarray:
        return np.clip(self.unit, 0.0, 1.0)


def pydicom_slices() -> list[BenchSlice]:
    from pydicom.data import get_testdata_file
    from pydicom.multival import MultiValue

    out = []
    for name, file in REAL_SLICES.items():
        (study,) = scan(get_testdata_file(file)).studies.values()  # files in pydicom's own package
        series = load_series(next(iter(study.series.values())))
        ds = series.datasets[0]
        kernel = ds.get("ConvolutionKernel", "")
        out.append(BenchSlice("pydicom", name, file, str(ds.SOPInstanceUID), series.hu[0], float(ds.PixelSpacing[0]),
                              str(kernel[0] if isinstance(kernel, MultiValue) else kernel)))
    return out


def realct_slices(part: str, folder: str) -> list[BenchSlice]:
    import pydicom

    root = realct.resolve(folder)
    return [BenchSlice(part, s.group, s.file, str(pydicom.dcmread(root / s.file, stop_before_pixels=True).SOPInstanceUID),
                       s.hu, s.pixel_mm, s.kernel) for s in realct.load_part(part, folder)]


def import_bm3d():
    """The ``bm3d`` package. Its correlated-noise mode (a spectrum for ``sigma_psd``) calls
    ``numpy.trapz`` through ``bm4d`` 4.x, which NumPy 2.4 removed in favour of ``numpy.trapezoid``
    (the same function): that name is given back to NumPy if it is missing."""
    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid
    import bm3d

    return bm3d


def told_methods(denoiser: Denoiser, level: str, shape: tuple[int, ...], use_bm3d: bool,
                 bm3d_estimate: bool = False) -> dict[str, Callable[[np.ndarray, float], np.ndarray]]:
    """The methods told the added noise, each ``(noisy copy, its std) -> result``: ``autoencoder_told``
    (the model given the copy clipped to the window, as the QA report's told row; noise-conditioned
    models only: a blind one cannot be told anything) and ``bm3d`` (told the std, or for
    kernel-shaped noise its spectrum for a slice of ``shape``) when ``use_bm3d``; with
    ``bm3d_estimate`` also ``bm3d_estimate``: BM3D told what the delivered model is told, the noise
    estimated from the copy itself (white: no spectrum), as BM3D would run in a pipeline like this one,
    which knows no added std; the caller gives it that estimate (``estimated_noise_unit`` of the
    copy) in place of the std."""
    out: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {}
    if denoiser.noise_map:
        out["autoencoder_told"] = lambda x, s: denoiser.denoise_unit(np.clip(x, 0, 1)[None], s)[0]
    if use_bm3d:
        bm3d = import_bm3d()
        psd = noise_model(level).bm3d_psd(shape)  # correlated noise: BM3D told its spectrum
        out["bm3d"] = lambda x, s: bm3d.bm3d(x, sigma_psd=s if psd is None else psd)
    if bm3d_estimate:
        bm3d = import_bm3d()
        out["bm3d_estimate"] = lambda x, s: bm3d.bm3d(x, sigma_psd=s)  # s: the caller's estimate from x
    return out


def noise_model(level: str) -> NoiseModel:
    """``0.07``: Gaussian sigma; ``lowdose@20000``: the low-dose simulation at that I0; ``soft@0.03``
    (``standard@``, ``sharp@``): noise of that std shaped by the kernel."""
    kind, _, value = level.rpartition("@")
    if kind == "lowdose":
        return NoiseModel("lowdose", i0=float(value))
    return NoiseModel(kind or "gaussian", float(value))


def noisy_copy(sl: BenchSlice, level: str, k: int, salt: str = "qa-noise") -> tuple[np.ndarray, float]:
    """The noisy copy (unit scale, not clipped) and the added noise's std; seed 0 of salt ``qa-noise``
    is exactly the QA report's copy of that slice."""
    seed = seed_from_uid(sl.uid, salt if k == 0 else f"{salt}-{k}")
    return noise_model(level).noisy(sl.unit, sl.hu, W.width, sl.pixel_mm, seed)


class Cache:
    """Scores of the classical methods (deterministic: same slice, noise and setting, same score; BM3D's
    library aggregates on several threads, which moves a pixel by up to ~1e-5 between runs), kept
    in a JSON file between runs, so that comparing models does not rerun BM3D. Keys name the level,
    slice, seed and method; the model and non-local means told the noise estimate are never cached,
    BM3D told the estimate under the estimate it was told (a changed estimator misses the cache)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict = json.loads(path.read_text()) if path and path.is_file() else {}

    def get(self, key: str):
        return self.data.get(key)

    def put(self, key: str, value) -> None:
        self.data[key] = value
        if self.path:
            write_json(self.path, self.data)


def _noise_key(level: str) -> str:
    """A level as cache keys name it: low-dose noise with its simulation (over the whole slice since
    ``low_dose_noise_whole_hu``), so that a cache of the earlier simulation is not read for it."""
    return level + "+whole-slice" if level.startswith("lowdose") else level


def score_key(level: str, slice_name: str, seed: int, method: str, setting="") -> str:
    """The :class:`Cache` key of one method's score on one slice, noise level and seed."""
    return f"score|{_noise_key(level)}|{slice_name}|{seed}|{method}|{setting}"


def nlm_told_the_estimate(noisy_unit: np.ndarray) -> np.ndarray:
    """Non-local means as the QA report runs it: ``h`` from the noise estimated on the copy itself."""
    return classical_filters(FilterParams(), estimated_noise_unit(noisy_unit[None], W))["nlm"](noisy_unit)


def tune(level: str, slices: list[BenchSlice], cache: Cache) -> dict[str, tuple[tuple, object]]:
    """Best mean-PSNR setting of each seed filter and the bilateral on ``slices`` (tuning noise, salt
    ``tune``); non-local means told the estimate (not tuned)."""
    key = f"tuned|{_noise_key(level)}|" + ",".join(s.name for s in slices)
    cands = {name: options for name, options in candidates().items() if name != "nlm"}
    told = {"nlm": (("auto",), nlm_told_the_estimate)}
    if cache.get(key):
        return {**{name: next((p, f) for p, f in cands[name] if list(p) == params)
                   for name, params in cache.get(key).items() if name in cands}, **told}
    noisy = [noisy_copy(s, level, 0, "tune")[0] for s in slices]
    best = {}
    for name, options in cands.items():
        best[name] = max(((np.mean([psnr(s.reference, np.clip(f(n), 0, 1)) for s, n in zip(slices, noisy)]), p, f)
                          for p, f in options), key=lambda t: t[0])[1:]
    cache.put(key, {name: list(p) for name, (p, _) in best.items()})
    return {**best, **told}


def margins(psnr_by_method: dict[str, float]) -> dict[str, float]:
    """The model's PSNR (as delivered: told nothing) minus BM3D's (each BM3D row measured: told the std,
    told the estimate), the best of the four seed filters' and the best classical method's, and the
    delivered model's minus the told one's."""
    model = psnr_by_method["autoencoder"]
    classical = {m: v for m, v in psnr_by_method.items() if m not in ("noisy", "autoencoder", "autoencoder_told")}
    out = {m: model - classical[m] for m in ("bm3d", "bm3d_estimate") if m in classical}
    out["seed filters"] = model - max(classical[m] for m in SEED_FILTERS)
    out["best classical"] = model - max(classical.values())
    if "autoencoder_told" in psnr_by_method:
        out["estimate"] = model - psnr_by_method["autoencoder_told"]
    return out


def score_level(level: str, slices: list[BenchSlice], seeds: int, denoiser: Denoiser, filters: dict,
                use_bm3d: bool, seconds: dict[str, list[float]], cache: Cache, bm3d_estimate: bool = False
                ) -> dict[str, dict[str, tuple[float, float]]]:
    """slice name -> method -> (mean PSNR, mean SSIM) over the seeds."""
    delivered = delivered_model(denoiser, W, [])
    out = {}
    for sl in slices:
        acc: dict[str, list[tuple[float, float]]] = defaultdict(list)
        told = told_methods(denoiser, level, sl.hu.shape, use_bm3d, bm3d_estimate)
        for k in range(seeds):
            noisy, sigma = noisy_copy(sl, level, k)
            est = estimated_noise_unit(noisy[None], W) if "bm3d_estimate" in told else None  # estimated once
            bound = {name: (lambda x, f=f, s=est if name == "bm3d_estimate" else sigma: f(x, s))
                     for name, f in told.items()}
            methods = {"noisy": lambda x: x, "autoencoder": lambda x: delivered(x[None])[0]}
            methods.update({name: f for name, f in bound.items() if name == "autoencoder_told"})
            methods.update({name: f for name, (_, f) in filters.items()})
            methods.update({name: f for name, f in bound.items() if name.startswith("bm3d")})
            settings = {name: filters[name][0] for name in methods if name in filters}
            if "bm3d_estimate" in methods:
                settings["bm3d_estimate"] = f"sigma {est:.6g}"
            keys = {name: score_key(level, sl.name, k, name, settings.get(name, "")) for name in methods}
            cached = {name for name in methods
                      if not name.startswith("autoencoder") and filters.get(name, ((),))[0] != ("auto",)}
            hits = {name: hit for name in cached if (hit := cache.get(keys[name]))}
            timed: dict[str, float] = {}
            scored = score_methods(sl.reference, noisy, {n: f for n, f in methods.items() if n not in hits},
                                   seconds=timed, clock=time.process_time)
            cpu = timed if sl.hu.shape == (512, 512) else {}  # CPU seconds per 512x512 slice only
            for name in methods:
                if name in hits:
                    acc[name].append(tuple(hits[name][:2]))
                    if hits[name][2] is not None:
                        seconds[name].append(hits[name][2])
                    continue
                (score,) = scored[name]
                acc[name].append((score.psnr, score.ssim))
                if name in cpu and name in ("autoencoder", "autoencoder_told", "bm3d", "nlm"):
                    seconds[name].append(cpu[name])
                if name in cached:
                    cache.put(keys[name], [score.psnr, score.ssim, cpu.get(name) if name in ("bm3d", "nlm") else None])
        out[sl.name] = {m: (float(np.mean([v[0] for v in vals])), float(np.mean([v[1] for v in vals])))
                        for m, vals in acc.items()}
    return out


def qa_margins(slices: list[BenchSlice], level: str, loaded, folder: str) -> dict[str, dict[str, float]]:
    """The pipeline's own QA (process_scan, default [qa_filters], every slice scored) on ``slices``:
    file name -> method -> PSNR, read back from the studies' qa_report.csv."""
    import csv
    import shutil

    from pipeline.settings import Settings
    from pipeline.study_run import process_scan

    nm = noise_model(level)
    root = realct.resolve(folder)
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        for sl in slices:
            (src / sl.name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(root / sl.name, src / sl.name)
        settings = Settings(qa_noise=nm.kind, qa_sigma=nm.sigma, qa_lowdose_i0=nm.i0, qa_every=1, qa_panels=0,
                            progress=False, device="cpu")
        denoiser = Denoiser.from_settings(loaded, settings)
        by_series = {sl.uid: sl.name for sl in slices}
        outcomes = process_scan(scan(src), Path(tmp) / "out", settings, denoiser)
        for o in outcomes:
            with open(o.folder / "qa_slices.csv", newline="") as fh:
                for row in csv.DictReader(fh):
                    out.setdefault(by_series[row["sop_instance_uid"]], {})[row["method"]] = float(row["psnr_db"])
    return out


def add_digits_argument(ap: argparse.ArgumentParser) -> None:
    """``--digits N``: the decimals of the PSNR figures a bench prints (this one's and bench.context's)."""
    ap.add_argument("--digits", type=int, choices=range(1, 7), default=2, metavar="N",
                    help="decimals of the PSNR figures printed (default 2; 4 to compare two models' rows)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", nargs="*", default=["validation", "test", "pydicom"])
    ap.add_argument("--levels", nargs="*", default=["0.02", "0.03", "0.05", "0.07", "0.1", "lowdose@20000", "soft@0.03"])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--no-bm3d", action="store_true")
    ap.add_argument("--bm3d-estimate", action="store_true",
                    help="also BM3D told the noise estimated from the copy (what the delivered model is told)")
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--card", type=Path, default=None, help="record the figures in this model card")
    add_digits_argument(ap)
    ap.add_argument("--by", choices=GROUPINGS, default="source",
                    help="rows per source (default), per reconstruction kernel or per slice; the card's are per source")
    ap.add_argument("--qa-check", action="store_true", help="compare the QA report's margins on the test part")
    ap.add_argument("--realct-dir", default=realct.DEFAULT_DIR)
    ap.add_argument("--noise-level-map", default=NOISE_MAP_DEFAULT, choices=NOISE_MAP_MODES,
                    help="the delivered model's noise level: one per series or a local map (luigi.cfg's setting)")
    ap.add_argument("--blotchy-pass", default=BLOTCHY_DEFAULT, choices=BLOTCHY_MODES,
                    help="the delivered model's blotchy pass (luigi.cfg's setting; pipeline/inference/polyphase.py)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="JSON file of the classical methods' scores, reused by later runs (e.g. runs/quality_cache.json)")
    args = ap.parse_args()
    cache = Cache(args.cache)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    loaded = load_model(args.weights)
    denoiser = Denoiser(loaded, "cpu", cpu_batch_size=1, noise_level_map=args.noise_level_map,
                        blotchy_pass=args.blotchy_pass)
    have_real = realct.available(args.realct_dir)
    if not have_real:
        print(f"# {realct.resolve(args.realct_dir)}: no real CT set; only pydicom's slices")
    slices = {p: (pydicom_slices() if p == "pydicom" else realct_slices(p, args.realct_dir) if have_real else [])
              for p in args.parts}
    tuning = realct_slices("validation", args.realct_dir) if have_real else slices.get("pydicom", [])
    use_bm3d = not args.no_bm3d
    seconds: dict[str, list[float]] = defaultdict(list)
    results: dict[str, dict[str, dict[str, dict[str, tuple[float, float]]]]] = {}  # level -> part -> slice -> method
    tuned: dict[str, str] = {}
    print(f"# model {loaded.name} ({'noise-conditioned' if denoiser.noise_map else 'blind'}); window {W}; "
          f"{args.seeds} noise seed(s) per slice; filters tuned on {'the validation part' if have_real else 'pydicom'}"
          f"; noise level map {denoiser.noise_level_map}; blotchy pass {denoiser.blotchy_pass}")
    for level in args.levels:
        best = tune(level, tuning, cache)
        tuned[level] = ", ".join(f"{n} {p}" for n, (p, _) in best.items())
        results[level] = {part: score_level(level, sl, args.seeds, denoiser, best, use_bm3d, seconds, cache,
                                            args.bm3d_estimate)
                          for part, sl in slices.items() if sl}
    print_tables(results, slices, args.digits, args.by)
    print("\n| method | CPU s per 512x512 slice | share of BM3D's |\n|---|---|---|")
    ref = np.mean(seconds["bm3d"]) if seconds.get("bm3d") else None
    for name, vals in seconds.items():
        print(f"| {name} | {np.mean(vals):.3f} | {np.mean(vals) / ref:.3f} |" if ref else f"| {name} | {np.mean(vals):.3f} | |")
    print("\n# filter settings per level (tuned on the validation part; nlm told the noise estimate):")
    for level, line in tuned.items():
        print(f"#   {level}: {line}")
    if args.qa_check and have_real and "test" in slices:
        compare_with_qa(results, slices["test"], loaded, args.realct_dir)
    if args.card:
        record_real_ct(args.card, loaded, results, slices, args.seeds, seconds)


def _means(per_slice: dict[str, dict[str, tuple[float, float]]], names: list[str]) -> dict[str, tuple[float, float]]:
    methods = next(iter(per_slice.values())).keys()
    return {m: (float(np.mean([per_slice[n][m][0] for n in names])), float(np.mean([per_slice[n][m][1] for n in names])))
            for m in methods}


GROUPINGS = ("source", "kernel", "slice")


def group_of(sl: BenchSlice, by: str = "source") -> str:
    """The row a slice counts in: its source, its reconstruction kernel (``by="kernel"``) or itself
    (``by="slice"``, its name and kernel)."""
    if by not in GROUPINGS:
        raise ValueError(f"rows are grouped by one of {GROUPINGS}, got {by!r}")
    if by == "slice":
        return f"{sl.name} ({sl.kernel or 'kernel not named'})"
    return sl.group if by == "source" else f"kernel {sl.kernel or '(not named)'}"


def rows(results, slices, by: str = "source"):
    """(level, part, group, means) for every source (or kernel) of every part, then the part's mean ('all')."""
    for level, by_part in results.items():
        for part, per_slice in by_part.items():
            groups: dict[str, list[str]] = defaultdict(list)
            for sl in slices[part]:
                groups[group_of(sl, by)].append(sl.name)
            for group, names in groups.items():
                yield level, part, f"{group} ({len(names)})", _means(per_slice, names)
            if len(groups) > 1:
                yield level, part, f"all ({len(per_slice)})", _means(per_slice, list(per_slice))


def print_tables(results, slices, digits: int = 2, by: str = "source") -> None:
    all_rows = list(rows(results, slices, by))
    methods = list(all_rows[0][3])
    print("\n(autoencoder: as the derived series runs it, strength full, told nothing; autoencoder_told: told "
          "the added noise's std)")
    estimate = "bm3d_estimate" in methods
    print(f"\n| noise | part | {by} (slices) | " + " | ".join(methods) + " | model - BM3D |"
          + (" model - BM3D told the estimate |" if estimate else "")
          + " model - best seed filter | model - model told |")
    print("|" + "---|" * (len(methods) + 6 + estimate))
    for level, part, source, means in all_rows:
        m = margins({k: v[0] for k, v in means.items()})
        cells = [f"{means[k][0]:.{digits}f} / {means[k][1]:.3f}" for k in methods]
        bm = [f"{m[k]:+.{digits}f}" if k in m else "-" for k in ("bm3d", "bm3d_estimate")[:1 + estimate]]
        print(f"| {level} | {part} | {source} | " + " | ".join(cells + bm)
              + f" | {m['seed filters']:+.{digits}f} | "
              + (f"{m['estimate']:+.{digits}f}" if "estimate" in m else "-") + " |")  # a blind model: no told row


def compare_with_qa(results, test: list[BenchSlice], loaded, folder: str) -> None:
    """The QA report's margins (model - each filter) against the bench's on the same test slices and
    noise, at the QA's default noise (Gaussian 0.07)."""
    qa = qa_margins(test, "0.07", loaded, folder)
    bench = results["0.07"]["test"]
    left = sorted({sl.name for sl in test} - set(qa))
    print(f"\n# QA report vs bench on the test slices, sigma 0.07 (mean PSNR margins, dB): the {len(qa)} of "
          f"{len(test)} slices DenoiseStudy selects" + (f" (not selected: {', '.join(left)})" if left else ""))
    print("| margin | QA report | bench | difference |\n|---|---|---|---|")
    for f in ("gaussian", "average", "median", "bilateral", "nlm", "autoencoder_told"):
        q = np.mean([qa[n]["autoencoder"] - qa[n][f] for n in qa])
        b = np.mean([bench[n]["autoencoder"][0] - bench[n][f][0] for n in qa])
        print(f"| model - {f} | {q:+.2f} | {b:+.2f} | {q - b:+.2f} |")
    q = np.mean([qa[n]["autoencoder"] for n in qa])
    b = np.mean([bench[n]["autoencoder"][0] for n in qa])
    print(f"| model PSNR | {q:.2f} | {b:.2f} | {q - b:+.2f} |")


def told_text(methods: set[str]) -> str:
    """What the model card says each model row and BM3D were told, from the methods actually scored."""
    told = [name for method, name in (("autoencoder_told", "autoencoder_told"), ("bm3d", "BM3D")) if method in methods]
    text = "autoencoder told nothing (as the derived series runs it)"
    if told:
        text += f"; {' and '.join(told)} told the added noise's std"
    if "bm3d_estimate" in methods:
        text += "; bm3d_estimate told the noise estimated from the copy, as the autoencoder is"
    return text + ("; BM3D given the spectrum of kernel-shaped noise" if "bm3d" in methods
                   else "; BM3D not run in this measurement")


def record_real_ct(card_path: Path, loaded, results, slices, seeds: int, seconds) -> None:
    """The tables in the measured weights' card (``evaluation.real_ct``); refused for another model's card."""
    table: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    methods: set[str] = set()  # every method scored, for what the text says each was told
    for level, part, source, means in rows(results, slices):
        table[f"{part}: {source}"][level.replace("lowdose@", "lowdose_i0_")] = {m: round(v[0], 2) for m, v in means.items()}
        methods.update(means)
    record(card_path, loaded, "real_ct", None, {
        "data": "real CT set, validation and test parts (split by source, models/training/realct.py) and pydicom's "
                f"CT_small.dcm and J2K_pixelrep_mismatch.dcm; {seeds} noise seed(s) per slice from its SOPInstanceUID; "
                f"noise in HU, not clipped; {told_text(methods)}; filters tuned on the validation part; "
                "python -m bench.quality",
        "psnr_db": dict(table),
        "cpu_seconds_per_512_slice": {m: round(float(np.mean(v)), 3) for m, v in seconds.items()},
    })


if __name__ == "__main__":
    main()
