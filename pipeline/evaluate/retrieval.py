"""Retrieval in f's space: the rank of each source among a gallery when probed with f(G(x)), and nearest identities."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class RankSummary:
    """Ranks (1 = best) of each probe's own gallery item, with what a random ordering would give."""

    median: float
    mean: float
    gallery: int
    ranks: np.ndarray

    @property
    def chance(self) -> float:
        """The median (and mean) rank of a random ordering: (gallery + 1) / 2, the paper's "gallery size / 2"."""
        return (self.gallery + 1) / 2


def self_ranks(probes: torch.Tensor, gallery: torch.Tensor) -> RankSummary:
    """Rank of gallery item i among all gallery items by cosine to probe i (ties count against it).

    Args:
        probes: (N, D) f(G(x_i)).
        gallery: (N, D) f(x_i), the same order.
    """
    if probes.shape != gallery.shape or probes.ndim != 2 or len(probes) == 0:
        raise ValueError(f"probes {tuple(probes.shape)} and gallery {tuple(gallery.shape)} must be the same (N, D)")
    similarity = F.normalize(probes.float(), dim=1) @ F.normalize(gallery.float(), dim=1).T  # (N, N)
    own = similarity.diagonal().unsqueeze(1)  # (N, 1)
    ranks = (similarity >= own).sum(1).numpy()  # own item counts itself: rank 1 = nearest
    return RankSummary(float(np.median(ranks)), float(ranks.mean()), len(gallery), ranks)


def identity_topk(
    probes: torch.Tensor, identities: Sequence[str], centroids: torch.Tensor, names: Sequence[str], ks: Sequence[int]
) -> dict[int, float]:
    """Top-k accuracy of the nearest identity centroid (cosine) to each probe against its true identity.

    Args:
        probes: (N, D) f(G(x)).
        identities: the true identity of each probe.
        centroids: (M, D) the mean f of each identity's photos.
        names: the identity of each centroid.
        ks: which k to report.
    """
    similarity = F.normalize(probes.float(), dim=1) @ F.normalize(centroids.float(), dim=1).T  # (N, M)
    order = similarity.argsort(dim=1, descending=True).numpy()
    position = {name: i for i, name in enumerate(names)}
    truth = np.array([position.get(name, -1) for name in identities])
    return {k: float((order[:, :k] == truth[:, None]).any(1).mean()) for k in ks}


def identity_centroids(embeddings: torch.Tensor, identities: Sequence[str]) -> tuple[torch.Tensor, list[str]]:
    """The normalised mean embedding of each identity, names sorted."""
    names = sorted(set(identities))
    labels = np.array(identities)
    rows = [F.normalize(embeddings[torch.from_numpy(labels == name)].mean(0), dim=0) for name in names]
    return torch.stack(rows), names
