"""The denoising strength of the derived series, as scanner vendors sell it: a share of the scan's own
noise.

* **Relative** (the default): ``low``, ``medium``, ``high``, ``full`` or a percentage (``60%``): the
  share of each series' estimated noise std (:mod:`pipeline.inference.noise_level`) to remove. The model runs
  at the level that removes all of the series' noise (:func:`model_level_hu`), and the derived series
  is the original plus that share of the model's correction, as the blend percentages of iterative
  reconstruction products work: where the model removes the noise, the std left is about
  (1 - share) of the original's. ``full`` applies the whole correction (the setting of every
  comparison with BM3D).
* **Absolute**: a number of HU (``20`` or ``20 HU``): the model is told that noise std whatever the
  scan, and its whole correction is applied (as before the relative contract).

A blind model (no noise-level input) always removes what it sees: a relative strength blends that
share of its correction; an absolute one blends ``hu / 40`` of it (all of it from 40 HU up).

The named shares were chosen with ``bench/strength.py`` on the real validation slices (README,
"Strength").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.errors import ConfigError

SHARES = {"low": 0.25, "medium": 0.5, "high": 0.75, "full": 1.0}
DEFAULT_STRENGTH = "medium"
BLIND_FULL_HU = 40.0  # an absolute strength of this many HU or more applies a blind model's whole correction
MAX_HU = 500.0
# The model's noise-level input was trained on white Gaussian noise. CT noise shaped by a smooth
# reconstruction kernel is blotchy: fine in no direction (whiteness < 1, pipeline/inference/noise_level.py),
# and told its std the model removes only its finest part. So the level it is told is the estimated
# std times (whiteness / WHITE_ENOUGH) ** -WHITENESS_EXPONENT below WHITE_ENOUGH, at most
# MAX_LEVEL_GAIN times the std. Chosen on the real validation slices by the best PSNR with
# ramp-Gaussian (CT-like) noise of several textures, white noise and the low-dose simulation
# (bench/noise_level.py --calibrate; white noise reads whiteness 1.0, mildly shaped noise 1.02-1.07,
# low-dose noise 1.04-1.2 and want the std itself; whiteness 0.7-0.9 about 2-3x it; 0.36-0.6 6x it).
# The whiteness is the finest direction's, so streaks (fine across, smooth along) are told their std.
# That rule is the model's: a model trained on kernel-shaped noise as well wants about its std told
# for blotchy noise too. Its card says so (``level_rule``: whiteness exponent and largest gain, fitted
# by bench/noise_level.py --calibrate --weights W); a card without it gets the rule above.
WHITE_ENOUGH = 1.0
WHITENESS_EXPONENT = 4.8
MAX_LEVEL_GAIN = 6.0


@dataclass(frozen=True)
class LevelRule:
    """What a model is told for noise of a given whiteness: std x min(max_gain, whiteness^-exponent)."""

    exponent: float = WHITENESS_EXPONENT
    max_gain: float = MAX_LEVEL_GAIN

    def __post_init__(self) -> None:
        if not (self.exponent >= 0 and self.max_gain >= 1):
            raise ConfigError(f"level_rule needs exponent >= 0 and max_gain >= 1, got exponent {self.exponent!r}, "
                              f"max_gain {self.max_gain!r}")

    @classmethod
    def from_card(cls, card: dict, key: str = "level_rule") -> LevelRule:
        """The rule a model card names under ``key`` (``level_rule``; a paired model's network for lone
        slices may have its own, ``lone_level_rule``), else the default one; ``ConfigError`` for a
        rule that is not two numbers >= 0 and >= 1."""
        rule = card.get(key)
        if rule is None:
            return cls()
        try:
            exponent, max_gain = float(rule["exponent"]), float(rule["max_gain"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"model card {key} must hold exponent and max_gain, got {rule!r}") from None
        try:
            return cls(exponent, max_gain)
        except ConfigError as exc:
            raise ConfigError(f"model card {key}{str(exc).removeprefix('level_rule')}") from None

    def gain(self, whiteness: float) -> float:
        return min(self.max_gain, max(1.0, (max(whiteness, 1e-3) / WHITE_ENOUGH) ** -self.exponent))


DEFAULT_RULE = LevelRule()


@dataclass(frozen=True)
class Strength:
    """A parsed strength: ``share`` (0, 1] of the estimated noise for a relative one, ``hu`` for an
    absolute one (exactly one of them is set); ``text`` as the user wrote it, normalized."""

    text: str
    share: float | None = None
    hu: float | None = None

    @property
    def relative(self) -> bool:
        return self.share is not None

    def __str__(self) -> str:
        if self.share is None:
            return f"{self.hu:g} HU"
        pct = f"{self.share * 100:g} % of the estimated noise"
        return pct if self.text.endswith("%") else f"{self.text} ({pct})"

    def model_hu(self, noise_hu: float | None, whiteness: float = 1.0, rule: LevelRule = DEFAULT_RULE) -> float:
        """The noise std (HU) the model is told: the calibrated level of the series' estimated noise
        for a relative strength (``noise_hu`` required), the number itself for an absolute one."""
        if self.hu is not None:
            return self.hu
        if noise_hu is None or not math.isfinite(noise_hu):
            raise ConfigError(f"strength {self.text!r} is relative to the series' noise: no noise estimate given")
        return model_level_hu(noise_hu, whiteness, rule)

    def blend(self, noise_map: bool = True) -> float:
        """The share of the model's correction applied to the original."""
        if self.share is not None:
            return self.share
        return 1.0 if noise_map else min(1.0, self.hu / BLIND_FULL_HU)


def model_level_hu(noise_hu: float, whiteness: float = 1.0, rule: LevelRule = DEFAULT_RULE) -> float:
    """The noise level (HU) the model must be told to remove noise of std ``noise_hu`` with the given
    whiteness (see the module's calibration note; ``rule``: the model's); never below 0.5 HU."""
    return max(0.5, float(noise_hu) * rule.gain(whiteness))


def parse_strength(value: str | float | Strength) -> Strength:
    """``low``, ``medium``, ``high``, ``full``, a percentage in (0, 100] (``60%``) or a noise std in
    HU in (0, 500] (``20``, ``20 HU``); ``ConfigError`` in one line for anything else."""
    if isinstance(value, Strength):
        return value
    key = str(value).strip().lower()
    if key in SHARES:
        return Strength(key, share=SHARES[key])
    what = ("strength must be low, medium, high, full, a percentage of the series' noise (e.g. 60%) or a noise "
            f"std in HU (e.g. 20), got {value!r}")
    if key.endswith("%"):
        pct = _number(key.removesuffix("%"))
        if not 0 < pct <= 100:
            raise ConfigError(f"{what}: a percentage must be in (0, 100]")
        return Strength(f"{pct:g}%", share=pct / 100.0)
    hu = _number(key.removesuffix("hu"))
    if math.isnan(hu):
        raise ConfigError(what)
    if not 0 < hu <= MAX_HU:
        raise ConfigError(f"{what}: a noise std in HU must be in (0, {MAX_HU:g}]")
    return Strength(f"{hu:g}", hu=hu)


def _number(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan
