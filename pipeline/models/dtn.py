"""Domain Transfer Network (Taigman et al., ICLR 2017): g from f's embedding to an emoji, and the 3-way D."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.dcgan import init_dcgan_weights

# The discriminator's three classes: G of a source photo, G of a target avatar, a real avatar.
FAKE_SOURCE, FAKE_TARGET, REAL_TARGET = 0, 1, 2


def _upsample_block(channels_in: int, channels_out: int, first: bool, dropout: float) -> nn.Sequential:
    """ConvTranspose 4x4 stride 2 + BN + LeakyReLU, then 1x1 conv + BN + LeakyReLU (and dropout)."""
    layers: list[nn.Module] = [
        nn.ConvTranspose2d(channels_in, channels_out, 4, stride=2, padding=0 if first else 1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(channels_out, channels_out, 1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.LeakyReLU(0.2, inplace=True),
    ]
    if dropout > 0:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


class EmojiDecoder(nn.Module):
    """g: an f embedding (B, D) -> an emoji (B, 3, size, size) in [-1, 1].

    The embedding is a 1x1 map; each block doubles the side with a 4x4 stride-2 transposed conv (the first turns
    1x1 into 4x4), and a last 4x4 stride-2 transposed conv with tanh gives the RGB image.

    Args:
        embed_dim: D, the width of f's embedding.
        ngf: channels of the last hidden block; earlier blocks have 2x, 4x, ... of it.
        size: output side, a power of two >= 8.
        dropout: Dropout2d probability after every hidden block (the seed's g had dropout); 0 = none.
    """

    def __init__(self, embed_dim: int, ngf: int = 32, size: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        if size < 8 or size & (size - 1):
            raise ValueError(f"size={size}: use a power of two >= 8")
        if embed_dim < 1 or ngf < 1 or not 0 <= dropout < 1:
            raise ValueError(f"embed_dim={embed_dim}, ngf={ngf} (>= 1), dropout={dropout} (in [0, 1))")
        self.embed_dim, self.size = embed_dim, size
        hidden = size.bit_length() - 3  # blocks from 1x1 to size/2: 4, 8, ..., size/2
        widths = [ngf * 2 ** (hidden - 1 - i) for i in range(hidden)]  # e.g. 256, 128, 64, 32
        blocks, channels = [], embed_dim
        for i, width in enumerate(widths):
            blocks.append(_upsample_block(channels, width, first=i == 0, dropout=dropout))
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.to_rgb = nn.ConvTranspose2d(channels, 3, 4, stride=2, padding=1)
        for module in self.modules():  # DCGAN init, in this order (the draws follow it)
            init_dcgan_weights(module)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        x = embedding.view(embedding.shape[0], -1, 1, 1)  # (B, D, 1, 1)
        x = self.blocks(x)  # (B, ngf, size / 2, size / 2)
        return torch.tanh(self.to_rgb(x))  # (B, 3, size, size)


class TripleDiscriminator(nn.Module):
    """D: an emoji (B, 3, size, size) -> logits (B, 3) over {G(source), G(target), real target}.

    4x4 stride-2 convs halve the side down to 4x4 (BatchNorm after all but the first), then a 4x4 conv gives the
    three logits.

    Args:
        ndf: channels of the first conv; each next one doubles.
        size: input side, a power of two >= 8.
    """

    def __init__(self, ndf: int = 32, size: int = 64) -> None:
        super().__init__()
        if size < 8 or size & (size - 1) or ndf < 1:
            raise ValueError(f"size={size} (a power of two >= 8), ndf={ndf} (>= 1)")
        layers: list[nn.Module] = []
        channels, side, width = 3, size, ndf
        while side > 4:
            layers.append(nn.Conv2d(channels, width, 4, stride=2, padding=1, bias=channels == 3))
            if channels != 3:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            channels, side, width = width, side // 2, width * 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(channels, 3, 4)
        for module in self.modules():  # DCGAN init, in this order (the draws follow it)
            init_dcgan_weights(module)

    def forward(self, emoji: torch.Tensor) -> torch.Tensor:
        x = self.features(emoji)  # (B, C, 4, 4)
        return self.head(x).flatten(1)  # (B, 3)


def to_encoder_input(emoji: torch.Tensor, size: int) -> torch.Tensor:
    """g's output (B, 3, s, s) in [-1, 1] resized to f's input side (bilinear, differentiable)."""
    if emoji.shape[-1] == size:
        return emoji
    return F.interpolate(
        emoji, size=(size, size), mode="bilinear", align_corners=False, antialias=size < emoji.shape[-1]
    )
