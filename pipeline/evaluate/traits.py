"""Trait verdicts: trait classes from trait columns, a small avatar trait classifier, balanced accuracy with chance."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.trait_classes import TRAITS, class_counts, skin_tone_rank, trait_classes

__all__ = ["TRAITS", "class_counts", "skin_tone_rank", "trait_classes"]  # the trait space, read from core


class TraitNet(nn.Module):
    """A small CNN with one linear head per trait: (B, 3, S, S) in [-1, 1] -> {trait: (B, classes) logits}.

    Args:
        classes: trait -> number of classes.
        width: channels of the first conv; three more stride-2 convs double it.
    """

    def __init__(self, classes: Mapping[str, int], width: int = 12) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for i in range(4):
            out = width * 2**i
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            channels = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (B, 8 * width)
        self.heads = nn.ModuleDict({name: nn.Linear(channels, n) for name, n in classes.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.features(x)
        return {name: head(features) for name, head in self.heads.items()}


def train_trait_net(
    images: torch.Tensor, labels: pd.DataFrame, classes: Mapping[str, int], steps: int, lr: float, seed: int
) -> TraitNet:
    """Fit a TraitNet on (N, 3, S, S) images in [-1, 1] with labels (N rows, one column per trait) by Adam.

    Batches of 64 drawn with replacement, random horizontal flips; rows with -1 for a trait do not train its head.
    """
    with torch.enable_grad():  # callers evaluate under no_grad
        return _fit(images, labels, classes, steps, lr, seed)


def _fit(
    images: torch.Tensor, labels: pd.DataFrame, classes: Mapping[str, int], steps: int, lr: float, seed: int
) -> TraitNet:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = TraitNet(classes)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    targets = {name: torch.tensor(labels[name].to_numpy(), dtype=torch.long) for name in classes}
    net.train()
    for _ in range(steps):
        pick = torch.randint(len(images), (min(64, len(images)),), generator=generator)
        x = images[pick]
        flip = torch.rand(len(pick), generator=generator) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        logits = net(x)
        loss = sum(F.cross_entropy(logits[n], targets[n][pick], ignore_index=-1) for n in classes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        optimizer.step()
    return net.eval()


@torch.no_grad()
def predict_traits(net: TraitNet, images: torch.Tensor) -> pd.DataFrame:
    """The predicted class of every trait for (N, 3, S, S) images."""
    net.eval()
    outputs = [net(chunk) for chunk in images.split(256)]
    return pd.DataFrame({name: torch.cat([o[name] for o in outputs]).argmax(1).numpy() for name in net.heads})


@dataclass(frozen=True)
class Balanced:
    """Balanced accuracy (the mean recall over the classes present in the truth) and its chance, 1 / classes."""

    accuracy: float
    chance: float
    classes: int
    count: int

    @property
    def above_chance(self) -> float:
        return self.accuracy - self.chance


def balanced_accuracy(predicted: np.ndarray, truth: np.ndarray) -> Balanced | None:
    """The mean over the classes in `truth` (>= 0; -1 = unknown) of the share of their rows `predicted` gets right.

    A model that always answers the majority class scores 1 / K with K classes present, whatever their balance,
    so rare traits (hats, glasses) cannot hide behind the majority share. None when no row has a known truth.
    """
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    known = truth >= 0
    if not known.any():
        return None
    predicted, truth = predicted[known], truth[known]
    present = np.unique(truth)
    recalls = [float((predicted[truth == c] == c).mean()) for c in present]
    return Balanced(float(np.mean(recalls)), 1.0 / len(present), len(present), int(known.sum()))


def balanced_table(predicted: pd.DataFrame, truth: pd.DataFrame) -> dict[str, Balanced]:
    """`balanced_accuracy` of every trait column of `truth` that has a known row."""
    out = {}
    for name in truth.columns:
        score = balanced_accuracy(predicted[name].to_numpy(), truth[name].to_numpy())
        if score is not None:
            out[name] = score
    return out


def linear_probe(
    features: torch.Tensor, labels: np.ndarray, classes: int, l2: float = 1e-2, iterations: int = 200
) -> nn.Linear:
    """A softmax regression of integer `labels` (N,) on `features` (N, D), fitted by L-BFGS from zero weights
    (deterministic); the features are standardised inside the returned layer."""
    x = features.detach().float()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    y = torch.as_tensor(labels, dtype=torch.long)
    layer = nn.Linear(x.shape[1], classes)
    nn.init.zeros_(layer.weight), nn.init.zeros_(layer.bias)
    z = (x - mean) / std
    optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(layer(z), y) + l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    # fold the standardisation into the layer: w (x - m) / s + b = (w / s) x + (b - w m / s)
    with torch.no_grad():
        layer.weight.div_(std)
        layer.bias.sub_(layer.weight @ mean)
    return layer.eval()


def embedding_probe(
    train: torch.Tensor,
    train_truth: pd.DataFrame,
    tests: Mapping[str, tuple[torch.Tensor, pd.DataFrame]],
    classes: Mapping[str, int],
) -> dict[str, dict[str, Balanced]]:
    """What an embedding says of each trait: a linear probe per trait fitted on `train` (N, D) with its truth, and
    its balanced accuracy on every named test set of (embeddings, truth). Traits with a single class in training are
    skipped.
    """
    out: dict[str, dict[str, Balanced]] = {name: {} for name in tests}
    for trait, n in classes.items():
        known = train_truth[trait].to_numpy() >= 0
        if len(np.unique(train_truth[trait].to_numpy()[known])) < 2:
            continue
        layer = linear_probe(train[torch.as_tensor(known)], train_truth[trait].to_numpy()[known], n)
        for name, (features, truth) in tests.items():
            with torch.no_grad():
                predicted = pd.DataFrame({trait: layer(features.float()).argmax(1).numpy()})
            out[name].update(balanced_table(predicted, truth[[trait]].reset_index(drop=True)))
    return out
