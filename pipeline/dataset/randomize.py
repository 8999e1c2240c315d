"""Domain randomisation of avatars: the flat renders made to vary as photos do, so that what a network learns of an
avatar's traits also holds in a photo (Tobin et al. 2017's sim-to-real recipe, applied to the avatar engine)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from pipeline.dataset.loader import Augment, augment_batch

# The avatar engine's background colour (the sandbox's and Bitmoji's light grey) and how far a pixel may stray from it.
BACKGROUND = (244, 243, 238)
BACKGROUND_TOLERANCE = 8 / 255


@dataclass(frozen=True)
class Randomize:
    """How much each photo-like change varies; every one is drawn per image.

    Attributes:
        background: probability of replacing the flat background by a random gradient with blotches and grain.
        shading: largest darkening towards the sides of the image (a round head lit from the front).
        light: largest left-right light gradient, either way.
        exposure: exposure factors drawn from 1 +- this.
        gamma: gamma drawn from 1 +- this.
        blur: probability of a 3x3 or 5x5 box blur (softens the engine's outlines as a camera does).
        noise: largest per-pixel noise std.
        geometry: the loader's flip, crop, rotation and colour jitter, on top.
    """

    background: float = 0.8
    shading: float = 0.5
    light: float = 0.3
    exposure: float = 0.4
    gamma: float = 0.4
    blur: float = 0.7
    noise: float = 0.04
    geometry: Augment = field(
        default_factory=lambda: Augment(flip=0.5, crop=0.15, brightness=0.1, contrast=0.3, saturation=0.3, rotate=10.0)
    )


def background_mask(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) 1.0 where a float (B, 3, S, S) image in [0, 1] shows the engine's flat background."""
    colour = torch.tensor(BACKGROUND, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) / 255
    return ((x - colour).abs().amax(1, keepdim=True) <= BACKGROUND_TOLERANCE).to(x.dtype)


def random_backgrounds(batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(B, 3, S, S) in [0, 1]: a two-colour gradient at a random angle, low-frequency colour blotches and grain."""
    u = torch.rand((batch, 1, 1, 1), generator=generator) * 2 * math.pi
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    along = (torch.cos(u) * xs + torch.sin(u) * ys) / 2 + 0.5  # (B, 1, S, S) in [0, 1]
    first, second = torch.rand((2, batch, 3, 1, 1), generator=generator)
    image = first + (second - first) * along
    blotches = torch.rand((batch, 3, 4, 4), generator=generator) - 0.5
    image = image + 0.3 * F.interpolate(blotches, size=(size, size), mode="bicubic", align_corners=False)
    grain = torch.rand((batch, 1, 1, 1), generator=generator) * 0.15
    image = image + grain * (torch.rand((batch, 3, size, size), generator=generator) - 0.5)
    return image.clamp(0, 1)


def randomize_avatars(x: torch.Tensor, cfg: Randomize, generator: torch.Generator) -> torch.Tensor:
    """Photo-like variants of avatars: float (B, 3, S, S) in [0, 1] -> the same shape and range.

    Random draws come from `generator` on the CPU, so a seed gives the same images on every device.
    """
    batch, _, size, _ = x.shape
    device, dtype = x.device, x.dtype

    def draw(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator).to(device, dtype)

    replace = (draw(batch, 1, 1, 1) < cfg.background).to(dtype)
    backgrounds = random_backgrounds(batch, size, generator).to(device, dtype)
    mask = background_mask(x) * replace
    x = x * (1 - mask) + backgrounds * mask
    xs = torch.linspace(-1, 1, size, device=device, dtype=dtype).view(1, 1, 1, size)
    sides = cfg.shading * draw(batch, 1, 1, 1)
    light = cfg.light * (2 * draw(batch, 1, 1, 1) - 1)
    x = x * (1 - sides * xs.pow(2)) * (1 + light * xs)
    x = x * (1 + cfg.exposure * (2 * draw(batch, 1, 1, 1) - 1))
    x = x.clamp(1e-4, 1).pow(1 + cfg.gamma * (2 * draw(batch, 1, 1, 1) - 1))
    kernel = 3 if float(draw(1)) < 0.5 else 5
    blurred = F.avg_pool2d(x, kernel, stride=1, padding=kernel // 2, count_include_pad=False)
    x = torch.where(draw(batch, 1, 1, 1) < cfg.blur, blurred, x)
    noise = torch.randn((batch, 3, size, size), generator=generator).to(device, dtype)
    x = x + noise * cfg.noise * draw(batch, 1, 1, 1)
    return augment_batch(x.clamp(0, 1), cfg.geometry, generator)
