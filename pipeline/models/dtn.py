"""Domain Transfer Network (Taigman et al., ICLR 2017): g from f's embedding to an emoji, the 3-way D, the losses."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.checkpoint import load_checkpoint, save_checkpoint
from pipeline.models.dcgan import dcgan_init

DTN_FORMAT = "img2caricature/dtn-v1"

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
        self.init_weights()

    def init_weights(self) -> None:
        """DCGAN's init, module by module in `modules()` order (the random draws follow it)."""
        for module in self.modules():
            dcgan_init(module)

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
        self.init_weights()

    def init_weights(self) -> None:
        """DCGAN's init, module by module in `modules()` order (the random draws follow it)."""
        for module in self.modules():
            dcgan_init(module)

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


# ---- the losses (section 3 of the paper): the 3-way D loss, L_GANG, L_CONST, L_TID and L_TV ------------------------

Distance = Literal["cosine", "mse", "l1"]


def distance(a: torch.Tensor, b: torch.Tensor, kind: Distance) -> torch.Tensor:
    """The mean over the batch of a per-sample distance: 1 - cosine, mean squared or mean absolute difference."""
    if kind == "cosine":
        return (1 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)).mean()
    if kind == "mse":
        return F.mse_loss(a, b)
    if kind == "l1":
        return F.l1_loss(a, b)
    raise ValueError(f"unknown distance {kind!r}; use cosine, mse or l1")


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """L_TV with the paper's B = 1: the mean over pixels of sqrt((z[i, j+1] - z[i, j])^2 + (z[i+1, j] - z[i, j])^2).

    Exactly 0 for a constant image, with a finite gradient there (sqrt is only taken where the sum is positive).
    """
    dx = images[:, :, :-1, 1:] - images[:, :, :-1, :-1]  # (B, C, H-1, W-1)
    dy = images[:, :, 1:, :-1] - images[:, :, :-1, :-1]
    squared = dx.pow(2) + dy.pow(2)
    positive = squared > 0
    return (torch.sqrt(torch.where(positive, squared, torch.ones_like(squared))) * positive).mean()


def discriminator_loss(
    source_logits: torch.Tensor, target_logits: torch.Tensor, real_logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3-way cross-entropy of D: G(source) is class 0, G(target) class 1, a real avatar class 2.

    Returns:
        (the sum of the three mean cross-entropies, the source term alone: the adaptive schedule watches it).
    """
    source = F.cross_entropy(source_logits, _labels(source_logits, FAKE_SOURCE))
    target = F.cross_entropy(target_logits, _labels(target_logits, FAKE_TARGET))
    real = F.cross_entropy(real_logits, _labels(real_logits, REAL_TARGET))
    return source + target + real, source


def generator_gan_loss(source_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """L_GANG: G wants D to call both its source and its target outputs real avatars (class 2)."""
    return F.cross_entropy(source_logits, _labels(source_logits, REAL_TARGET)) + F.cross_entropy(
        target_logits, _labels(target_logits, REAL_TARGET)
    )


def _labels(logits: torch.Tensor, value: int) -> torch.Tensor:
    return torch.full((logits.shape[0],), value, dtype=torch.long, device=logits.device)


# ---- dtn.pt ---------------------------------------------------------------------------------------------------------


def save_dtn(path: Path, g_state: dict, d_state: dict, arch: dict[str, Any], info: dict[str, Any]) -> None:
    """Write dtn.pt atomically: g and D weights, g's arguments, and info (params, f's run key, metrics)."""
    save_checkpoint(path, {"g": g_state, "d": d_state, "arch": dict(arch), "info": info}, DTN_FORMAT)


def load_generator(path: Path, device: str | torch.device = "cpu") -> tuple[EmojiDecoder, dict[str, Any]]:
    """g from dtn.pt in eval mode, and the info saved beside it.

    Raises:
        FileNotFoundError: when there is no file (train it with `dvc repro train_dtn`).
        pipeline.core.checkpoint.CheckpointError: when the file is corrupt or not a dtn.pt.
    """
    payload = load_checkpoint(path, DTN_FORMAT, missing="train the DTN first with `dvc repro train_dtn`")
    g = EmojiDecoder(**payload["arch"])
    g.load_state_dict(payload["g"])
    return g.to(device).eval(), payload["info"]
