"""Training settings: one dataclass, read from a JSON file of its fields with overrides."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.inference.window import Window


@dataclass
class TrainConfig:
    steps: int = 20000
    batch_size: int = 16
    patch: int = 96
    lr: float = 1e-3
    lr_min: float = 1e-5
    sigma_min: float = 0.0
    sigma_max: float = 0.12
    seed: int = 1
    pool_size: int = 192
    pool_refresh: int = 1500
    width: int = 32
    levels: int = 2
    convs_per_level: int = 2
    # the noise level to remove as a second input channel (FFDNet-style); False: blind
    noise_map: bool = False
    # the noise's whiteness (how fine it is, pipeline.inference.noise_level) as a further input
    # channel, for noise-conditioned networks: each training patch is told its noise's whiteness
    whiteness_map: bool = False
    # with whiteness_map: the first layer's weights on the whiteness channel step this many times the
    # learning rate (Adam steps each weight by about the rate, so a channel grown at zero into a
    # trained network moves as fast as the rest only with a factor); 1: like every other weight
    whiteness_lr_factor: float = 1.0
    # residual blocks at the coarsest level (receptive field and capacity at 1/16 of the pixels)
    blocks: int = 0
    # neighbouring slices on each side given as extra input channels (2.5D; 0: one slice); patches
    # are then cut from the contiguous real volumes in volumes_dir (models.training.volumes)
    context: int = 0
    volumes_dir: str = "../shared/data/realct_volumes"
    # with slice context and a source other than "volumes": share of the patches cut from the
    # volumes; the rest are lone slices of that source, each its own neighbours (as the pipeline runs
    # a one-slice series), so the model keeps what it knows of scanners the volumes do not have
    volume_fraction: float = 1.0
    # without slice context (a 2-D network for lone slices) and a source other than "volumes": share of
    # the patches cut from single slices of those volumes, each alone (what a series of slices too far
    # apart to be neighbours gets); 0: the source's slices only
    lone_volume_fraction: float = 0.0
    # share of the volume patches whose noise is low-dose CT noise (each slice its own simulation,
    # of the patch's own anatomy, at the patch's drawn std) instead of white or kernel-shaped noise
    volume_lowdose_fraction: float = 0.0
    # share of the volume patches cut instead from the contiguous runs of the real CT set's training
    # part in realct_dir (thinner slices, chest and trunk: models.training.volumes.realct_part_runs);
    # 0: the volumes in volumes_dir only
    runs_fraction: float = 0.0
    # share of the patches of those volumes (not of the runs) whose stack is made thinner: 1 + 2 context slices at
    # a step uniform in [thin_step_min_mm, thin_step_max_mm], each interpolated linearly between the
    # volume's two nearest slices, each its own noise (models.training.data.thinner_positions); 0: as stored
    thin_fraction: float = 0.0
    thin_step_min_mm: float = 0.8
    thin_step_max_mm: float = 2.0
    window_low: float = -1000.0
    window_high: float = 1000.0
    val_every: int = 500
    val_sigma: float = 0.07
    val_slices: int = 6
    checkpoint_every: int = 250
    # "synthetic" (phantoms), "realct" (the training part of the real CT set in realct_dir, see
    # models.training.realct; validation then runs on its validation part) or a folder of a site's
    # own CT studies (its slices are the references; validation stays on synthetic slices), or
    # "volumes" (the contiguous real volumes in volumes_dir, as a model with slice context uses them)
    source: str = "synthetic"
    # the real CT set (manifest.csv + DICOM files); relative paths are taken from the repository root
    realct_dir: str = "../shared/data/realct"
    # with source "realct": share of the patches cut from phantom references instead (0: real only)
    synthetic_fraction: float = 0.0
    # start a new run from these weights (e.g. the shipped ones, to continue training in a later
    # session without its optimizer state; a blind network with fewer blocks grows into this one,
    # see models.autoencoder.grow_state); ignored when the run folder has a checkpoint
    init_weights: str = ""
    # with init_weights and slice context: the first convolution spread over the stack, one share per slice
    # ("0.05,0.15,0.6,0.15,0.05": the slice's own weights times 0.6 on it and 0.15 / 0.05 times them added to
    # each next / second neighbour's; models.autoencoder.spread_slices), so a start grown from a 2-D network
    # averages its neighbours' noise from the first step and computes what it did on a lone slice; "": as loaded
    init_slice_shares: str = ""
    # training references like real scans (0 = the clean phantoms of the first model):
    regions: str = "chest,abdomen"  # phantom regions, comma-separated (pipeline.synthetic.phantom.ALL_REGIONS)
    native_noise_max_hu: float = 0.0  # the reference keeps acquired noise: std uniform in [0, max] HU
    texture_max_hu: float = 0.0  # tissue heterogeneity: std uniform in [0, max] HU, 1.5-4 px grain
    streak_fraction: float = 0.0  # share of references whose own noise is partly streaky
    streak_length_max_px: float = 6.0  # streak length (Gaussian sigma along it) uniform in [2, max] px
    streak_max_hu: float = 0.0  # extra streaks on top of that noise, std uniform in [0, max] HU (streaky slices)
    psf_min_px: float = 0.4  # sharpest scanner blur (Gaussian sigma, px); the bluntest is 1.3
    # share of patches whose added noise is low-dose CT noise (Poisson on projections + FBP, its
    # std uniform in [sigma_min, sigma_max] + 0.005) instead of white Gaussian noise
    lowdose_fraction: float = 0.0
    # the level told for a low-dose patch (lone or of a volume): its std times exp(N(0, jitter)); 0:
    # its std. Production tells a series' estimate, which reads the low-dose noise of a soft-tissue
    # patch within about 0.73-1.27 of it (bench.lowdose_level), i.e. jitter about 0.22
    lowdose_level_jitter: float = 0.0
    # share of patches whose added noise is shaped by a reconstruction kernel (correlated CT noise,
    # pipeline.synthetic.kernel_noise; NPS cutoff uniform in [kernel_fc_min, kernel_fc_max] cycles per
    # pixel, std uniform in [sigma_min, sigma_max] + 0.005, told that std), drawn among the patches
    # that did not get low-dose noise
    kernel_fraction: float = 0.0
    kernel_fc_min: float = 0.08
    kernel_fc_max: float = 0.4
    # share of patches whose reference gets grain of its own before the noise is added: white or (half of
    # them) kernel-shaped noise, std uniform in [0, grain_max], in the target as well as the input and
    # not told. It teaches the network to remove the level it is told and keep grain beyond it, as a
    # scan's own grain is kept by the yardstick's reference; each slice of a volume patch its own field
    grain_fraction: float = 0.0
    grain_max: float = 0.02
    # resampled copies of every lone training slice beside it in the pool ("1.5,2.5": copies enlarged 1.5 and
    # 2.5 times, their pixels that much smaller; cubic interpolation, area averaging below 1), for textures
    # of pixel sizes the training sources lack; "": the slices as stored
    zoom_factors: str = ""
    # "mse": mean squared error over the batch (high-noise patches dominate it); "log_mse": mean
    # over patches of log(MSE + 1e-6), i.e. the mean patch PSNR, which weighs every noise level alike
    loss: str = "mse"

    def __post_init__(self) -> None:
        self.zooms  # a bad zoom_factors stops a run when its settings are read, not after its data loads
        if not 0.0 <= self.lone_volume_fraction <= 1.0:
            raise ValueError(f"lone_volume_fraction must lie in [0, 1], got {self.lone_volume_fraction}")
        if self.lone_volume_fraction and self.context:
            raise ValueError("lone_volume_fraction is for a 2-D network (context 0); with slice context the "
                             "volume patches are set by volume_fraction")
        if self.whiteness_lr_factor <= 0 or (self.whiteness_lr_factor != 1 and not self.whiteness_map):
            raise ValueError(f"whiteness_lr_factor must be above 0 and needs whiteness_map, got "
                             f"{self.whiteness_lr_factor} (whiteness_map {self.whiteness_map})")
        self.slice_shares

    @property
    def slice_shares(self) -> list[float]:
        """``init_slice_shares`` as numbers: one per slice of the stack, at least 0, summing to 1."""
        texts = [t.strip() for t in self.init_slice_shares.split(",") if t.strip()]
        if not texts:
            return []
        try:
            shares = [float(t) for t in texts]
        except ValueError:
            raise ValueError(f"init_slice_shares: {self.init_slice_shares!r} is not a list of numbers") from None
        # counted against the stack only with slice context: a 2-D copy of the settings (the phantom check's)
        # leaves them unused, and a 2-D run given them is refused by spread_slices
        if self.context and len(shares) != 1 + 2 * self.context:
            raise ValueError(f"init_slice_shares: {len(shares)} shares for a stack of {1 + 2 * self.context} slices")
        if min(shares) < 0 or abs(sum(shares) - 1.0) > 1e-6:
            raise ValueError(f"init_slice_shares: each at least 0 and summing to 1, got {self.init_slice_shares!r}")
        return shares

    @property
    def zooms(self) -> list[float]:
        """``zoom_factors`` as numbers, each checked to lie in [0.2, 5]."""
        out = []
        for text in (t.strip() for t in self.zoom_factors.split(",") if t.strip()):
            try:
                factor = float(text)
            except ValueError:
                raise ValueError(f"zoom_factors: {text!r} is not a number") from None
            if not 0.2 <= factor <= 5:
                raise ValueError(f"zoom_factors: {factor:g} is outside [0.2, 5]")
            out.append(factor)
        return out

    @property
    def window(self) -> Window:
        return Window(self.window_low, self.window_high)

    @property
    def architecture(self) -> dict[str, Any]:
        return {"width": self.width, "levels": self.levels, "convs_per_level": self.convs_per_level,
                "noise_map": self.noise_map, "blocks": self.blocks, "context": self.context,
                "whiteness_map": self.whiteness_map}


def config_from_card(values: dict[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` a model card's ``training.config`` records; settings it names that this
    version does not have are left out (the data settings are what a card's evaluation needs)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in values.items() if k in fields})


def load_config(path: Path | str | None = None, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a JSON file of its fields (``None``: the defaults), with
    ``overrides`` (fields whose value is not ``None``) applied on top. Unknown fields are an error."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values: dict[str, Any] = {}
    if path:
        values = json.loads(Path(path).read_text())
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"{path}: unknown training settings {unknown}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)
