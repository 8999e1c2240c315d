"""DiffAugment (Zhao et al. 2020): colour, translation and cutout that gradients pass through, for a GAN's D on
few images."""

from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], generator: torch.Generator | None = None) -> torch.Tensor:
    """The transforms of `policy`, in its order, each drawn per image and shared by the image's channels.

    D sees real and generated images through the same random family of transforms, in its step and in G's, so it
    cannot learn the few real images' exact pixels, and G learns the images behind the transforms (every
    transform is differentiable in x). With the same generator state, the same draws follow.

    Args:
        x: (B, C, H, W) images in [-1, 1].
        policy: names from POLICIES; an empty tuple returns x itself.
        generator: a CPU generator for the draws (None: torch's global one).

    Returns:
        the augmented batch, the shape and dtype of x.
    """
    for name in policy:
        if name not in POLICIES:
            raise ValueError(f"diffaugment policy {name!r}: use names from {POLICIES}")
        x = TRANSFORMS[name](x, generator)
    return x


def _uniform(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One U(0, 1) draw per image, (B, 1, 1, 1), on x's device and dtype."""
    return torch.rand(x.shape[0], 1, 1, 1, generator=generator).to(x.device, x.dtype)


def color(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Brightness shift in [-0.5, 0.5], saturation x [0, 2], contrast x [0.5, 1.5] (the paper's ranges)."""
    x = x + (_uniform(x, generator) - 0.5)
    grey = x.mean(dim=1, keepdim=True)  # (B, 1, H, W)
    x = (x - grey) * (_uniform(x, generator) * 2) + grey
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return (x - mean) * (_uniform(x, generator) + 0.5) + mean


def translation(x: torch.Tensor, generator: torch.Generator | None = None, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by whole pixels, up to `ratio` of its side each way; the uncovered border is 0 (mid grey)."""
    batch, _, height, width = x.shape
    reach_y, reach_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    shift_y = torch.randint(-reach_y, reach_y + 1, (batch, 1, 1), generator=generator).to(x.device)
    shift_x = torch.randint(-reach_x, reach_x + 1, (batch, 1, 1), generator=generator).to(x.device)
    rows = torch.arange(height, device=x.device).view(1, -1, 1) - shift_y + reach_y  # (B, H, 1) rows of the padded
    cols = torch.arange(width, device=x.device).view(1, 1, -1) - shift_x + reach_x  # (B, 1, W)
    padded = F.pad(x, (reach_x, reach_x, reach_y, reach_y))  # (B, C, H + 2 reach_y, W + 2 reach_x)
    flat = (rows * padded.shape[3] + cols).flatten(1)  # (B, H * W) positions in the padded image
    index = flat[:, None].expand(-1, x.shape[1], -1)  # (B, C, H * W)
    return padded.flatten(2).gather(2, index).view_as(x)


def cutout(x: torch.Tensor, generator: torch.Generator | None = None, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of `ratio` of the side per image, centred anywhere (it may hang over the border)."""
    batch, _, height, width = x.shape
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    top = torch.randint(0, height + (1 - size_y % 2), (batch, 1, 1), generator=generator).to(x.device) - size_y // 2
    left = torch.randint(0, width + (1 - size_x % 2), (batch, 1, 1), generator=generator).to(x.device) - size_x // 2
    rows = torch.arange(height, device=x.device).view(1, -1, 1)  # (1, H, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, -1)  # (1, 1, W)
    inside = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)  # (B, H, W)
    return x * (~inside).unsqueeze(1).to(x.dtype)


TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}
