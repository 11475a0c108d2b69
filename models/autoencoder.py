"""The denoising network: a small residual convolutional encoder-decoder (autoencoder family),
blind or conditioned on the noise level (a noise-level map as a second input channel, as FFDNet)."""
from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """x + conv(relu(conv(x))); the second convolution starts at zero, so a new block is the identity
    (a trained network grown by blocks computes what it computed before)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels), nn.Conv2d(channels, channels, 3, padding=1))
        nn.init.zeros_(self.body[1].weight)
        nn.init.zeros_(self.body[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class DenoisingAutoencoder(nn.Module):
    """Encoder (convolutions, stride-2 downsampling), ``blocks`` residual blocks at the coarsest level,
    decoder (transposed-convolution upsampling) with additive skip connections; the last layer predicts
    the noise, which is subtracted from the input (residual output).

    Fully convolutional: any H, W works; H and W that are not multiples of ``2**levels`` are padded
    by reflection and cropped back.

    ``forward(x, sigma)``: x is (batch, 1 + 2 * context, H, W), float in [0, 1] (HU normalized
    through the model's window and clipped to it): the slice to denoise, with ``context`` neighbouring
    slices of its stack on each side (2.5D: channels in stack order, the slice itself in the middle);
    returns that slice denoised, (batch, 1, H, W), not clipped. With ``noise_map`` the network also
    takes the noise level to remove: ``sigma`` (a float or a (batch,) tensor, std as a fraction of the
    window) becomes a constant extra input channel, or a (batch, 1, H, W) tensor is that channel pixel
    by pixel (a noise level that varies across the slice); a blind network ignores ``sigma``.

    With ``whiteness_map`` (noise-conditioned networks only) the network is also told how blotchy the
    noise is: ``whiteness`` (a float or a (batch,) tensor: the noise estimate's whiteness,
    :class:`pipeline.inference.noise_level.SliceNoise`, 1 for white noise, 0.2-0.6 for the blotchy
    noise of smooth kernels; ``None``: white) becomes a constant input channel of
    :func:`blotchiness`. A network without it ignores ``whiteness``.

    ``lone`` (the architecture of a 2-D network, with slice context only): a second network for lone
    slices, those whose stack holds no neighbour (every channel the slice itself: a one-slice series,
    or a slice cut off by gaps on both sides, :mod:`pipeline.inference.slice_context`). A network that
    learnt to expect its neighbours' independent noise leaves too much of a lone slice's, which its
    repeated neighbours do not average away; such slices go through ``lone`` instead (the 2-D path).
    """

    def __init__(self, width: int = 32, levels: int = 2, convs_per_level: int = 2, noise_map: bool = False,
                 blocks: int = 0, context: int = 0, lone: dict | None = None, whiteness_map: bool = False) -> None:
        super().__init__()
        if width < 1 or levels < 1 or convs_per_level < 1 or blocks < 0 or context < 0:
            raise ValueError("width, levels and convs_per_level must be >= 1, blocks and context >= 0")
        self.config = {"width": width, "levels": levels, "convs_per_level": convs_per_level,
                       "noise_map": bool(noise_map), "blocks": blocks}
        if context:  # recorded only when used: the cards of 2-D models stay as they were
            self.config["context"] = context
        if whiteness_map and not noise_map:
            raise ValueError("a network told the noise's whiteness must be told its level too (noise_map)")
        if whiteness_map:  # likewise
            self.config["whiteness_map"] = True
        self.whiteness_map = bool(whiteness_map)
        self.lone: DenoisingAutoencoder | None = None
        if lone is not None:
            if not context:
                raise ValueError("a network for lone slices needs a network with slice context beside it")
            if lone.get("context", 0) or "lone" in lone or bool(lone.get("noise_map", False)) != bool(noise_map):
                raise ValueError(f"the network for lone slices must be 2-D and told the noise level as this one is, "
                                 f"got {lone}")
            self.lone = DenoisingAutoencoder(**lone)
            self.config["lone"] = dict(self.lone.config)
        self.noise_map = bool(noise_map)
        self.context = context
        self.slices = 1 + 2 * context  # image channels of the input
        chans = [width * 2**k for k in range(levels + 1)]
        self.stem = nn.Sequential(_conv(self.slices + int(self.noise_map) + int(self.whiteness_map), width),
                                  *[_conv(width, width) for _ in range(convs_per_level - 1)])
        self.down = nn.ModuleList(
            nn.Sequential(_conv(chans[k], chans[k + 1], stride=2),
                          *[_conv(chans[k + 1], chans[k + 1]) for _ in range(convs_per_level - 1 + (k == levels - 1))])
            for k in range(levels)
        )
        self.blocks = nn.Sequential(*[ResidualBlock(chans[levels]) for _ in range(blocks)])
        self.up = nn.ModuleList(nn.ConvTranspose2d(chans[k + 1], chans[k], 2, stride=2) for k in reversed(range(levels)))
        self.dec = nn.ModuleList(
            nn.Sequential(*[_conv(chans[k], chans[k]) for _ in range(convs_per_level)]) for k in reversed(range(levels))
        )
        self.head = nn.Conv2d(width, 1, 3, padding=1)
        self.multiple = 2**levels

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor | None = None,
                whiteness: float | torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[1] != self.slices:
            raise ValueError(f"expected {self.slices} slice channel(s) (context {self.context}), got {x.shape[1]}")
        if self.lone is not None:
            alone = lone_slices(x, self.context)
            if bool(alone.any()):
                return self._split(x, sigma, whiteness, alone)
        return self._forward(x, sigma, whiteness)

    def _split(self, x: torch.Tensor, sigma: float | torch.Tensor | None, whiteness: float | torch.Tensor | None,
               alone: torch.Tensor) -> torch.Tensor:
        """Lone slices of the batch through ``self.lone``, the others through this network."""
        def pick(value: float | torch.Tensor | None, rows: torch.Tensor) -> float | torch.Tensor | None:
            if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == x.shape[0]:
                return value[rows]
            return value

        centre = x[:, self.context:self.context + 1]
        if bool(alone.all()):
            return self.lone(centre, sigma, whiteness)
        out = torch.empty_like(centre)
        out[alone] = self.lone(centre[alone], pick(sigma, alone), pick(whiteness, alone))
        out[~alone] = self._forward(x[~alone], pick(sigma, ~alone), pick(whiteness, ~alone))
        return out

    def _forward(self, x: torch.Tensor, sigma: float | torch.Tensor | None,
                 whiteness: float | torch.Tensor | None = None) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        xp = nn.functional.pad(x, (0, pw, 0, ph), mode="reflect") if (ph or pw) else x
        inp = xp
        if self.noise_map:
            if sigma is None:
                raise ValueError("this network is conditioned on the noise level: pass sigma")
            level = torch.as_tensor(sigma, dtype=xp.dtype, device=xp.device)
            if level.dim() == 4:  # a map of the slice's own size
                if level.shape != (x.shape[0], 1, h, w):
                    raise ValueError(f"a noise-level map must be {(x.shape[0], 1, h, w)}, got {tuple(level.shape)}")
                level = nn.functional.pad(level, (0, pw, 0, ph), mode="reflect") if (ph or pw) else level
            else:
                level = level.reshape(-1, 1, 1, 1).expand(xp.shape[0], 1, *xp.shape[-2:])
            inp = torch.cat([xp, level], dim=1)
        if self.whiteness_map:
            blotch = blotchiness(1.0 if whiteness is None else whiteness).to(dtype=xp.dtype, device=xp.device)
            inp = torch.cat([inp, blotch.reshape(-1, 1, 1, 1).expand(xp.shape[0], 1, *xp.shape[-2:])], dim=1)
        feats = self.stem(inp)
        skips = [feats]
        for down in self.down:
            feats = down(feats)
            skips.append(feats)
        skips.pop()
        feats = self.blocks(feats)
        for up, dec in zip(self.up, self.dec):
            feats = dec(up(feats) + skips.pop())
        noise = self.head(feats)
        return (xp[:, self.context:self.context + 1] - noise)[..., :h, :w]


def blotchiness(whiteness: float | torch.Tensor) -> torch.Tensor:
    """The input channel a network with ``whiteness_map`` is told: 1 - whiteness within [0, 1] (0 for
    white noise and for noise finer than white, such as streaks; NaN, an estimate that read nothing,
    counts as white)."""
    w = torch.nan_to_num(torch.as_tensor(whiteness, dtype=torch.float32), nan=1.0)
    return (1.0 - w).clamp(0.0, 1.0)


def lone_slices(x: torch.Tensor, context: int) -> torch.Tensor:
    """(batch,) bool: which stacks of ``x`` (batch, 1 + 2 * context, H, W) hold the slice alone, every
    channel equal to the slice in the middle (its neighbours replicated from itself)."""
    centre = x[:, context:context + 1]
    return (x == centre).flatten(1).all(dim=1)


def collapse_slices(state: dict[str, torch.Tensor], model: DenoisingAutoencoder) -> dict[str, torch.Tensor]:
    """The weights of ``model``'s 2-D form (no slice context) from ``state`` (of ``model``, with
    context): the first convolution's slice channels summed into one, which is what the network
    computes on a lone slice (its stack the slice repeated), so the 2-D form equals it there."""
    if not model.context:
        raise ValueError("collapsing the stack needs a network with slice context")
    out = {k: v.clone() for k, v in state.items() if not k.startswith("lone.")}
    weight = out["stem.0.0.weight"]
    if weight.shape[1] != model.slices + int(model.noise_map) + int(model.whiteness_map):
        raise ValueError(f"weight stem.0.0.weight: shape {tuple(weight.shape)} does not fit {model.config}")
    summed = weight[:, :model.slices].double().sum(dim=1, keepdim=True).to(weight.dtype)
    out["stem.0.0.weight"] = torch.cat([summed, weight[:, model.slices:]], dim=1)
    return out


def grow_state(state: dict[str, torch.Tensor], model: DenoisingAutoencoder,
               source_whiteness: bool = False) -> dict[str, torch.Tensor]:
    """The weights of a smaller network of the same width and levels (blind, fewer blocks, less slice
    context, not told the whiteness) laid into ``model``: the first convolution's new input channels
    (neighbouring slices, the noise map, the whiteness map) start at zero and the extra residual
    blocks keep their identity start, so ``model`` computes what the smaller one did (a 2-D model
    grown into a 2.5-D one ignores the neighbours until trained; a network grown a whiteness map
    ignores it until trained). ``source_whiteness``: the smaller network has a whiteness map."""
    grown = model.state_dict()
    for name, value in state.items():
        if name not in grown:
            raise ValueError(f"weight {name} has no place in {model.config}")
        target = grown[name]
        if value.shape == target.shape:
            grown[name] = value.clone()
        elif name == "stem.0.0.weight" and value.shape[0] == target.shape[0] and value.shape[1] < target.shape[1]:
            grown[name] = _grow_stem(value, target, model, source_whiteness)
        else:
            raise ValueError(f"weight {name}: shape {tuple(value.shape)} does not fit {tuple(target.shape)}")
    return grown


def _grow_stem(value: torch.Tensor, target: torch.Tensor, model: DenoisingAutoencoder,
               source_whiteness: bool) -> torch.Tensor:
    """The first convolution's weights, (width, slices + noise map + whiteness map, 3, 3), from a
    smaller one's."""
    channels = value.shape[1] - int(source_whiteness)  # its whiteness map, if any, is its last channel
    old_slices = channels - 1 if channels % 2 == 0 else channels  # odd slices (+1 noise map)
    old_map = channels - old_slices
    if (old_map > int(model.noise_map) or old_slices > model.slices
            or (source_whiteness and not model.whiteness_map)):
        raise ValueError(f"weight stem.0.0.weight: shape {tuple(value.shape)} does not fit {tuple(target.shape)}")
    out = torch.zeros_like(target)
    start = model.context - old_slices // 2
    out[:, start:start + old_slices] = value[:, :old_slices]  # the centre slices where they were
    if old_map:
        out[:, model.slices] = value[:, old_slices]
    if source_whiteness:
        out[:, model.slices + 1] = value[:, -1]
    return out


def spread_slices(state: dict[str, torch.Tensor], model: DenoisingAutoencoder,
                  shares: list[float]) -> dict[str, torch.Tensor]:
    """``state`` (of ``model``'s architecture, with slice context) with its first convolution reading a
    weighted mean of the stack: the slice's own weights times ``shares[context]`` on the slice and
    ``shares[k]`` times them added to slice channel k's (one share per slice of the stack, the slice in
    the middle, summing to 1). On a stack of one slice repeated (a lone slice, each its own neighbours)
    the network computes exactly what it did; on a real stack its first layer averages the
    neighbours' independent noise from the start, instead of learning to from near-zero weights."""
    if not model.context:
        raise ValueError("spreading the first layer over the stack needs a network with slice context")
    if len(shares) != model.slices:
        raise ValueError(f"{len(shares)} slice shares for a stack of {model.slices} slices")
    if min(shares) < 0 or abs(sum(shares) - 1.0) > 1e-6:
        raise ValueError(f"slice shares must be at least 0 and sum to 1, got {shares}")
    out = {k: v.clone() for k, v in state.items()}
    weight = out["stem.0.0.weight"]
    if weight.shape[1] != model.slices + int(model.noise_map) + int(model.whiteness_map):
        raise ValueError(f"weight stem.0.0.weight: shape {tuple(weight.shape)} does not fit {model.config}")
    centre = weight[:, model.context].clone()
    for k, share in enumerate(shares):
        if k == model.context:
            weight[:, k] = share * centre
        else:
            weight[:, k] += share * centre
    return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
