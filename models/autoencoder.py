"""The denoising network: a small residual convolutional encoder-decoder (autoencoder family)."""
from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU(inplace=True))


class DenoisingAutoencoder(nn.Module):
    """Encoder (convolutions, stride-2 downsampling) and decoder (transposed-convolution upsampling)
    with additive skip connections; the last layer predicts the noise, which is subtracted from the
    input (residual output).

    Fully convolutional: any H, W works; H and W that are not multiples of ``2**levels`` are padded
    by reflection and cropped back.

    ``forward(x)``: x is (batch, 1, H, W), float in [0, 1] (HU normalized through the model's window);
    returns the denoised image with the same layout (not clipped).
    """

    def __init__(self, width: int = 32, levels: int = 2, convs_per_level: int = 2) -> None:
        super().__init__()
        if width < 1 or levels < 1 or convs_per_level < 1:
            raise ValueError("width, levels and convs_per_level must be >= 1")
        self.config = {"width": width, "levels": levels, "convs_per_level": convs_per_level}
        chans = [width * 2**k for k in range(levels + 1)]
        self.stem = nn.Sequential(_conv(1, width), *[_conv(width, width) for _ in range(convs_per_level - 1)])
        self.down = nn.ModuleList(
            nn.Sequential(_conv(chans[k], chans[k + 1], stride=2),
                          *[_conv(chans[k + 1], chans[k + 1]) for _ in range(convs_per_level - 1 + (k == levels - 1))])
            for k in range(levels)
        )
        self.up = nn.ModuleList(nn.ConvTranspose2d(chans[k + 1], chans[k], 2, stride=2) for k in reversed(range(levels)))
        self.dec = nn.ModuleList(
            nn.Sequential(*[_conv(chans[k], chans[k]) for _ in range(convs_per_level)]) for k in reversed(range(levels))
        )
        self.head = nn.Conv2d(width, 1, 3, padding=1)
        self.multiple = 2**levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        xp = nn.functional.pad(x, (0, pw, 0, ph), mode="reflect") if (ph or pw) else x
        feats = self.stem(xp)
        skips = [feats]
        for down in self.down:
            feats = down(feats)
            skips.append(feats)
        skips.pop()
        for up, dec in zip(self.up, self.dec):
            feats = dec(up(feats) + skips.pop())
        noise = self.head(feats)
        return (xp - noise)[..., :h, :w]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
