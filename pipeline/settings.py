"""All settings of a run in one validated object (filled from ``luigi.cfg`` by ``tasks.py``)."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.dicom.codecs import output_syntax
from pipeline.dicom.selection import SelectionRules
from pipeline.errors import ConfigError
from pipeline.inference.noise_map import DEFAULT_MODE as NOISE_MAP_DEFAULT
from pipeline.inference.noise_map import check_mode
from pipeline.inference.polyphase import DEFAULT_MODE as BLOTCHY_DEFAULT
from pipeline.inference.polyphase import check_mode as check_blotchy_pass
from pipeline.inference.strength import DEFAULT_STRENGTH, Strength, parse_strength
from pipeline.inference.window import Window
from pipeline.qa.filters import FilterParams
from pipeline.qa.noise import NoiseModel

_SERIES_FIELDS = {"series_uid", "source_series_uid", "series_number"}
# template -> (fields it may use, fields of which it must use one so that names are unique)
_TEMPLATE_FIELDS = {"series_folder": (_SERIES_FIELDS, {"series_uid", "source_series_uid"}),
                    "file_name": (_SERIES_FIELDS | {"sop_uid", "index"}, {"sop_uid", "index"})}


@dataclass(frozen=True)
class Settings:
    window: Window = field(default_factory=Window)
    qa_sigma: float = 0.07
    qa_noise: str = "gaussian"  # or "lowdose", or kernel-shaped: "soft", "standard", "sharp"
    qa_lowdose_i0: float = 2e4
    batch_size: int = 8  # slices per model batch on a GPU
    cpu_batch_size: int = 1  # on the CPU: larger batches are not faster there and hold more memory
    device: str = "auto"
    # low, medium, high, full, a percentage or a noise std in HU; parsed here, once (pipeline.inference.strength)
    strength: Strength | str = DEFAULT_STRENGTH
    # series: one level per series; local: a relative strength tells the model the series' level shaped
    # by each slice's own noise map (pipeline.inference.noise_map)
    noise_level_map: str = NOISE_MAP_DEFAULT
    # off: each series denoised once; mean: a series with blotchy noise (smooth kernels) also through its
    # 2x2 polyphase sub-images, the two averaged (twice the model time there; pipeline.inference.polyphase)
    blotchy_pass: str = BLOTCHY_DEFAULT
    output_transfer_syntax: str = "explicit_le"  # or rle, jpeg_ls_lossless, jpeg2000_lossless
    amp: bool = True
    model_path: Path | None = None  # None: the shipped weights
    filters: FilterParams = field(default_factory=FilterParams)
    selection: SelectionRules = field(default_factory=SelectionRules)
    series_folder: str = "{series_uid}"
    file_name: str = "{index:05d}_{sop_uid}.dcm"
    series_description_suffix: str = " DENOISED"
    series_number_offset: int = 1000
    progress: bool = True
    qa_every: int = 8  # QA scores every k-th slice of a series (0: no QA)
    qa_panels: int = 3  # QA panel images per series, at the quartiles of the sampled slices (0: none)
    io_workers: int = 2  # threads that decode and write DICOM while the model runs
    chunk_slices: int = 32  # slices per streamed chunk (memory: a few chunks per series)
    prefetch_chunks: int = 2  # chunks decoded ahead of the model and waiting to be written

    def __post_init__(self) -> None:
        if not 0 <= self.qa_sigma <= 1:
            raise ConfigError(f"qa_sigma must be in [0, 1] (fraction of the window), got {self.qa_sigma}")
        try:
            NoiseModel(self.qa_noise, self.qa_sigma, self.qa_lowdose_i0)  # validates the noise settings
        except ValueError as exc:
            raise ConfigError(f"qa noise: {exc}") from None
        object.__setattr__(self, "strength", parse_strength(self.strength))  # validated and parsed once
        object.__setattr__(self, "noise_level_map", check_mode(self.noise_level_map))
        object.__setattr__(self, "blotchy_pass", check_blotchy_pass(self.blotchy_pass))
        output_syntax(self.output_transfer_syntax)  # known, and an encoder is installed
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.qa_panels < 0:
            raise ConfigError(f"qa_panels must be >= 0 (0: no panels), got {self.qa_panels}")
        if self.qa_every < 0:
            raise ConfigError(f"qa_every must be >= 0 (0: no QA), got {self.qa_every}")
        for name in ("cpu_batch_size", "io_workers", "chunk_slices", "prefetch_chunks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name, (allowed, unique) in _TEMPLATE_FIELDS.items():
            tmpl = getattr(self, name)
            used = set(re.findall(r"{(\w*)", tmpl))
            if not used & unique or used - allowed or "/" in tmpl or "\\" in tmpl or tmpl.startswith("."):
                raise ConfigError(f"{name} {tmpl!r} must be one path component built from {sorted(allowed)} "
                                  f"including one of {sorted(unique)}")
        if len(self.series_description_suffix) > 32:
            raise ConfigError("series_description_suffix is longer than 32 characters")

    @property
    def noise_model(self) -> NoiseModel:
        return NoiseModel(self.qa_noise, self.qa_sigma, self.qa_lowdose_i0)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["window"] = {"low_hu": self.window.low, "high_hu": self.window.high}
        d["model_path"] = str(self.model_path) if self.model_path else None
        d["strength"] = self.strength.text
        return d
