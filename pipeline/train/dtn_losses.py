"""The DTN's losses (Taigman et al. 2017): the 3-way D loss, L_GANG, L_CONST, L_TID and L_TV."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from pipeline.models.dtn import FAKE_SOURCE, FAKE_TARGET, REAL_TARGET

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
