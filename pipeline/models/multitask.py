"""f trained on two domains at once: identity on photos, the avatar API's parameters on avatars, and optionally a
photo-vs-avatar classifier behind a gradient reversal (Ganin & Lempitsky 2015) that pushes the domains together."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pipeline.models.avatar_params import AvatarParamsNet
from pipeline.models.vgg import VGG


class _Reverse(torch.autograd.Function):
    """Identity forward; the gradient times -weight backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.weight * grad, None


def reverse_gradient(x: torch.Tensor, weight: float) -> torch.Tensor:
    """x unchanged, but what flows back through it is multiplied by -weight."""
    return _Reverse.apply(x, weight)


class TwoDomainNet(nn.Module):
    """The VGG and its avatar heads in one module, so one forward pass (and one DDP wrapper) serves both domains.

    forward(photos, avatars, reverse) -> identity logits of the photos, {key: logits} of the avatars, and the domain
    classifier's logits of both (photos first; None without a domain classifier). The hidden activation f is taken
    from is what the avatar heads and the domain classifier read.
    """

    def __init__(self, vgg: VGG, heads: AvatarParamsNet, domain_hidden: int = 0) -> None:
        super().__init__()
        self.vgg, self.heads = vgg, heads
        dim = vgg.embed_dim
        self.domain = (
            nn.Sequential(nn.Linear(dim, domain_hidden), nn.ReLU(inplace=True), nn.Linear(domain_hidden, 1))
            if domain_hidden
            else None
        )

    def forward(
        self, photos: torch.Tensor, avatars: torch.Tensor, reverse: float = 0.0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
        hidden = self.vgg.forward_head(self.vgg.forward_features(torch.cat([photos, avatars])), pre_logits=True)
        photo_hidden, avatar_hidden = hidden[: len(photos)], hidden[len(photos) :]
        logits = self.vgg.classifier(self.vgg.head_drop(photo_hidden))
        domain = self.domain(reverse_gradient(hidden, reverse)).squeeze(1) if self.domain is not None else None
        return logits, self.heads(avatar_hidden), domain
