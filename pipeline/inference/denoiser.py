"""Batched model inference: CUDA with mixed precision when there is a GPU, CPU otherwise."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from models.store import LoadedModel
from pipeline.errors import ConfigError
from pipeline.inference import polyphase
from pipeline.inference.malloc import keep_freed_memory
from pipeline.inference.noise_level import SeriesNoise
from pipeline.inference.noise_map import DEFAULT_MODE, applies, check_mode, relative_noise_map
from pipeline.inference.slice_context import context_indices
from pipeline.inference.strength import DEFAULT_STRENGTH, LevelRule, Strength, parse_strength
from pipeline.inference.window import Window, hu_to_unit, unit_to_hu

if TYPE_CHECKING:
    from pipeline.settings import Settings

log = logging.getLogger(__name__)

EDGE_BAND = 0.025  # of the window (50 HU of [-1000, 1000]): where the output counts as at a window edge
TYPICAL_SIGMA = 0.01  # 20 HU in the [-1000, 1000] window: a level for timing runs (the level does not change the cost)


def resolve_device(requested: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda``/``cuda:N`` fail clearly without a GPU."""
    req = requested.strip().lower()
    if req == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if req.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {requested!r} requested but torch {torch.__version__} sees no CUDA GPU "
                              "(install the CUDA build of torch, or set device = auto)")
        return torch.device(req)
    if req == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"device must be auto, cpu or cuda[:N], got {requested!r}")


class Denoiser:
    """Runs a loaded model over stacks of slices in batches of ``batch_size`` (of
    ``cpu_batch_size``, when given, where the device is the CPU), at the denoising ``strength`` of
    :mod:`pipeline.inference.strength` for the derived series (a relative strength needs each series' noise
    estimate, :mod:`pipeline.inference.noise_level`). With ``noise_level_map`` ``local`` (not the default) a
    relative strength tells a noise-conditioned model the series' level times each slice's own
    :func:`~pipeline.inference.noise_map.relative_noise_map`; ``series`` tells it one level per series.
    With ``blotchy_pass`` ``mean`` (not the default) the slices of a series with blotchy noise that run
    alone are denoised a second time through their 2x2 polyphase sub-images and the two results
    averaged (:mod:`pipeline.inference.polyphase`)."""

    def __init__(self, loaded: LoadedModel, device: str = "auto", batch_size: int = 8, amp: bool = True,
                 cpu_batch_size: int | None = None, strength: str | float | Strength = DEFAULT_STRENGTH,
                 noise_level_map: str = DEFAULT_MODE, blotchy_pass: str = polyphase.DEFAULT_MODE) -> None:
        for name, value in (("batch_size", batch_size), ("cpu_batch_size", cpu_batch_size)):
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        self.loaded = loaded
        self.strength = parse_strength(strength)
        self.noise_level_map = check_mode(noise_level_map)
        self.blotchy_pass = polyphase.check_mode(blotchy_pass)
        self.device = resolve_device(device)
        self.batch_size = cpu_batch_size if cpu_batch_size and self.device.type == "cpu" else batch_size
        self.amp = amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        if self.device.type == "cpu":
            keep_freed_memory()  # activations of a 512x512 slice are 32 MiB+: reuse them, no page faults
        # On the CPU the model takes about 28 % less time per slice on channels-last (NHWC) tensors, with
        # the same results (to float rounding): oneDNN's direct kernels want the channels innermost.
        self.channels_last = self.device.type == "cpu"
        self.model = loaded.model.to(self.device).eval()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.level_rule = LevelRule.from_card(loaded.card)  # how this model is told blotchy noise
        # a paired model's network for lone slices may want its own rule (trained on other noise)
        self.lone_level_rule = (LevelRule.from_card(loaded.card, "lone_level_rule")
                                if getattr(loaded.model, "lone", None) is not None and "lone_level_rule" in loaded.card
                                else self.level_rule)
        log.info("model %s on %s (batch %d%s); strength %s%s%s", loaded.name, self.device, self.batch_size,
                 f", autocast {str(self.amp_dtype).removeprefix('torch.')}" if self.amp else "", self.strength,
                 "" if self.noise_map else f" (blind model: {self.strength.blend(False):.0%} of its correction)",
                 "; blotchy noise also through the polyphase sub-images" if self.polyphase_pass() else "")
        if self.whiteness_map:
            log.info("model %s is told each series' noise whiteness (estimated with its level)", loaded.name)

    @classmethod
    def from_settings(cls, loaded: LoadedModel, settings: Settings) -> Denoiser:
        """The denoiser of a run: device, batch sizes, mixed precision, strength, noise-level map and
        blotchy pass as ``settings`` hold them (validated and parsed there)."""
        return cls(loaded, settings.device, settings.batch_size, settings.amp, settings.cpu_batch_size,
                   settings.strength, settings.noise_level_map, settings.blotchy_pass)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def level_hu(self, noise: SeriesNoise | None, strength: Strength | None = None,
                 lone: bool = False) -> float | None:
        """The noise std (HU) the model is told for a series with the estimate ``noise`` (None for a
        blind model); ``lone``: what a context model's slices without a neighbour are told (its
        network for lone slices may have a level rule of its own, :attr:`lone_level_rule`)."""
        if not self.noise_map:
            return None
        s = strength or self.strength
        rule = self.lone_level_rule if lone else self.level_rule  # the same rule unless a lone network has its own
        return s.model_hu(noise.sigma_hu if noise else None, noise.whiteness if noise else 1.0, rule)

    def lone_told_apart(self) -> bool:
        """Whether the slices that run alone are told another level than those with neighbours (a
        paired model whose network for lone slices has a level rule of its own)."""
        return bool(self.context) and self.noise_map and self.lone_level_rule != self.level_rule

    def local_levels(self, strength: Strength | None = None) -> bool:
        """Whether the model may be told a level map shaped by each slice's noise (a noise-conditioned
        model, a relative strength and ``noise_level_map`` ``local``), not one level per series."""
        return self.noise_map and (strength or self.strength).relative and self.noise_level_map == "local"

    def maps_levels(self, noise: SeriesNoise | None, strength: Strength | None = None) -> bool:
        """Whether a series with the estimate ``noise`` is told a level map: :meth:`local_levels`
        and noise fine enough for the map (:func:`pipeline.inference.noise_map.applies`)."""
        return self.local_levels(strength) and noise is not None and applies(noise.whiteness)

    def polyphase_pass(self, strength: Strength | None = None) -> bool:
        """Whether the lone slices of a series with blotchy noise may be denoised a second time through
        their polyphase sub-images: ``blotchy_pass`` ``mean``, a noise-conditioned model and a relative
        strength (the second pass is told the series' own std; an absolute strength or a blind model
        are not measured with it)."""
        return self.blotchy_pass == "mean" and self.noise_map and (strength or self.strength).relative

    def blotchy(self, noise: SeriesNoise | None, strength: Strength | None = None) -> bool:
        """Whether the lone slices of a series with the estimate ``noise`` get the polyphase pass:
        :meth:`polyphase_pass` and noise blotchier than :data:`pipeline.inference.polyphase.MAX_WHITENESS`."""
        return self.polyphase_pass(strength) and noise is not None and polyphase.applies(noise.whiteness)

    def lone(self, links: np.ndarray | None, first: int, last: int) -> np.ndarray:
        """(last - first,) bool: which slices ``first:last`` of a stack with the neighbour ``links``
        run alone (a 2-D model: every one; a context model: those linked on neither side)."""
        if not self.context:
            return np.ones(last - first, bool)
        linked = np.asarray(links, bool)
        return ~(np.r_[False, linked][first:last] | np.r_[linked, False][first:last])

    @property
    def noise_map(self) -> bool:
        """Whether the model takes the noise level to remove (else it is blind and ignores sigma)."""
        return self.loaded.model.noise_map

    @property
    def whiteness_map(self) -> bool:
        """Whether the model (or its network for lone slices) is told the noise's whiteness."""
        model = self.loaded.model
        lone = getattr(model, "lone", None)
        return bool(getattr(model, "whiteness_map", False) or getattr(lone, "whiteness_map", False))

    def tells_whiteness(self, alone: int, count: int) -> bool:
        """Whether a series of ``count`` slices, ``alone`` of them run alone, tells a network the noise's
        whiteness: a paired model's network for stacks takes only the slices with neighbours, its
        network for lone slices only the others."""
        model = self.loaded.model
        lone = getattr(model, "lone", None)
        if lone is None:
            return bool(getattr(model, "whiteness_map", False))
        return bool((model.whiteness_map and alone < count) or (lone.whiteness_map and alone > 0))

    @property
    def context(self) -> int:
        """Neighbouring slices on each side the model takes (0: one slice, 2-D)."""
        return getattr(self.loaded.model, "context", 0)

    @torch.inference_mode()
    def denoise_unit(self, images: np.ndarray, sigma: float | np.ndarray | None = None,
                     on_batch: Callable[[int], None] | None = None, links: np.ndarray | None = None,
                     span: tuple[int, int] | None = None, whiteness: float = 1.0) -> np.ndarray:
        """(N, H, W) float32 in [0, 1] -> model output (not clipped) for slices ``span`` (default all),
        (len(span), H, W). ``sigma``: the noise std to remove (unit scale), one value, one per output
        slice or one (H, W) map per output slice; required by a noise-conditioned model, ignored by a
        blind one. ``whiteness``: the noise's (the series' estimate), for a network told it
        (``whiteness_map``; others ignore it). A model with slice
        context gets each slice's neighbours from ``images`` (:mod:`pipeline.inference.slice_context`; ``links``:
        whether consecutive slices are neighbours, default all, so ``images`` outside ``span`` serve
        as neighbours only); a 2-D model ignores ``links``."""
        if self.noise_map and sigma is None:
            raise ConfigError(f"model {self.loaded.name} is conditioned on the noise level: give a strength")
        first, last = span or (0, len(images))
        count = last - first
        levels = np.asarray(0.0 if sigma is None else sigma, np.float32)
        if levels.ndim == 3:  # a map per output slice: the model's (batch, 1, H, W) level channel
            if levels.shape != (count, *images.shape[1:]):
                raise ValueError(f"noise-level maps must be {(count, *images.shape[1:])}, got {levels.shape}")
            levels = levels[:, None]
        else:
            levels = np.array(np.broadcast_to(levels, (count,)))
        rows = (context_indices(len(images), self.context,
                                np.ones(max(len(images) - 1, 0), bool) if links is None else links)[first:last]
                if self.context else np.arange(first, last)[:, None])
        out = np.empty((count, *images.shape[1:]), dtype=np.float32)
        for start in range(0, count, self.batch_size):
            stack = images[rows[start:start + self.batch_size]]  # (batch, slices, H, W): neighbours gathered
            chunk = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))
            if self.device.type == "cuda":
                chunk = chunk.pin_memory()  # page-locked: the copy below overlaps with queued GPU work
            x = chunk.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            level = torch.from_numpy(np.ascontiguousarray(levels[start:start + len(chunk)])).to(self.device)
            with self._autocast():
                y = self.model(x, level, whiteness) if self.whiteness_map else self.model(x, level)
            out[start:start + len(chunk)] = y[:, 0].float().cpu().numpy()
            if on_batch:
                on_batch(len(chunk))
        return out

    def denoise_hu(self, hu: np.ndarray, window: Window, noise: SeriesNoise | None = None,
                   on_batch: Callable[[int], None] | None = None, strength: Strength | None = None,
                   links: np.ndarray | None = None, span: tuple[int, int] | None = None) -> np.ndarray:
        """Denoise (N, H, W) float32 HU of one series at the denoiser's strength (or ``strength``);
        returns float32 HU. ``noise``: the series' noise estimate, required by a relative strength.

        The model sees the slices clipped to ``window``. Where its output lies at a window edge (air,
        padding, bone, metal), the part of the slice beyond the window is put back, so those keep
        their HU instead of being clipped to the window's edges; where it lies inside the window, a
        value that noise pushed beyond the edge (lung at -850 HU with 150 HU of noise) is denoised,
        not given its noise back. The weight goes from 1 at that edge to 0 at :data:`EDGE_BAND` inside
        it. The strength's blend share of that result's change is applied to the original. A relative
        strength with ``noise_level_map`` ``local`` tells the model the series' level times each
        slice's :func:`~pipeline.inference.noise_map.relative_noise_map` (of ``hu``, noise and all),
        unless the series' noise is blotchy (:meth:`maps_levels`). Where the series' noise is blotchy
        and ``blotchy_pass`` is ``mean`` (:meth:`blotchy`), the model's output on each slice that runs
        alone (:meth:`lone`) is the mean of its output on the slice and on the slice's four polyphase
        sub-images (told the series' std as white noise): :mod:`pipeline.inference.polyphase`;
        ``on_batch`` is called with the slices of each batch of the direct pass, then with the number
        of slices that took the polyphase pass. A network told the noise's whiteness (``whiteness_map``)
        is told the series' estimate's (white without an estimate; the polyphase pass: white).

        A model with slice context needs ``links`` (:func:`pipeline.inference.slice_context.neighbour_links` of the
        slices' positions): which consecutive slices of ``hu`` are neighbours; with ``span`` only the
        slices ``span`` are denoised and returned, the others serving as their neighbours.
        """
        if self.context and links is None:
            raise ConfigError(f"model {self.loaded.name} takes {self.context} neighbouring slice(s) on each side: "
                              "the slices' neighbour links are required")
        s = strength or self.strength
        first, last = span or (0, len(hu))
        level = self.level_hu(noise, s)
        sigma = None if level is None else np.float32(level / window.width)
        if sigma is not None and self.lone_told_apart():  # one level per slice: its network's
            alone_level = np.float32(self.level_hu(noise, s, lone=True) / window.width)
            sigma = np.where(self.lone(links, first, last), alone_level, sigma).astype(np.float32)
        if sigma is not None and self.maps_levels(noise, s):
            sigma = np.stack([relative_noise_map(h) for h in hu[first:last]]) * np.reshape(sigma, (-1, 1, 1))
        unit = hu_to_unit(hu, window)
        clipped = np.clip(unit, 0.0, 1.0)
        whiteness = noise.whiteness if noise is not None else 1.0
        out = self.denoise_unit(clipped, sigma, on_batch, links, span, whiteness)
        if self.blotchy(noise, s):
            lone = self.lone(links, first, last)
            if lone.any():
                picked = clipped[first:last][lone]
                told = np.float32(s.model_hu(noise.sigma_hu, 1.0, self.lone_level_rule) / window.width)
                alone = np.zeros(max(len(picked) - 1, 0), bool)  # each picked slice as it ran: alone
                subs = [self.denoise_unit(sub, told, links=alone, whiteness=1.0)  # told as white noise
                        for sub in polyphase.phases(picked)]
                out[lone] = (out[lone] + polyphase.merge(subs, out.shape[-2:])) * np.float32(0.5)
                if on_batch:  # four quarter-size images: about one slice's work each
                    on_batch(len(picked))
        if span:
            unit = unit[span[0]:span[1]]
        band = np.float32(EDGE_BAND)
        below, above = np.minimum(unit, 0.0), np.maximum(unit - 1.0, 0.0)  # what lies beyond each edge
        full = out + np.clip(1.0 - out / band, 0.0, 1.0) * below + np.clip(1.0 - (1.0 - out) / band, 0.0, 1.0) * above
        return unit_to_hu(unit + (full - unit) * np.float32(s.blend(self.noise_map)), window)
