"""The denoising strength of the derived series, as scanner vendors offer it: ``low``, ``medium``,
``high``, or a number of HU.

A strength is the std (HU) of the noise the model is asked to remove. A noise-conditioned model
(``noise_map`` in its card) takes it as its noise-level input; a blind model always removes what it
estimates, so for it the strength blends its output with the original (``high`` and above: the model's
output as it is; ``low``: a quarter of its correction). The levels were chosen with
``bench/strength.py`` on the real validation slices (README, "Strength").
"""
from __future__ import annotations

import math

from .errors import ConfigError

STRENGTH_HU = {"low": 10.0, "medium": 20.0, "high": 40.0}
DEFAULT_STRENGTH = "medium"


def strength_hu(strength: str | float) -> float:
    """The noise std (HU) a strength names; ``ConfigError`` for anything else."""
    key = str(strength).strip().lower()
    if key in STRENGTH_HU:
        return STRENGTH_HU[key]
    try:
        value = float(key.removesuffix("hu").strip())
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 500):
        raise ConfigError(f"strength must be low, medium, high or a noise std in HU (0-500], got {strength!r}")
    return value


def blend_weight(strength: str | float) -> float:
    """For a blind model: the share of its correction applied (1.0 from ``high`` up)."""
    return min(1.0, strength_hu(strength) / STRENGTH_HU["high"])
