"""Classification metrics from confusion counts: top-k accuracy, per-class accuracy and their chance levels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class ClassCounts:
    """Counts that add up over batches and ranks: a confusion matrix, top-k hits and the summed loss.

    Attributes:
        confusion: (N, N) int64, rows = true class, columns = top-1 prediction.
        topk_hits: k -> samples whose true class is among the k highest logits.
        loss_sum: summed per-sample loss.
    """

    num_classes: int
    ks: tuple[int, ...] = (1, 5)
    confusion: torch.Tensor = field(init=False)
    topk_hits: dict[int, int] = field(init=False)
    loss_sum: float = 0.0

    def __post_init__(self) -> None:
        self.confusion = torch.zeros((self.num_classes, self.num_classes), dtype=torch.int64)
        self.topk_hits = dict.fromkeys(self.ks, 0)

    @property
    def total(self) -> int:
        return int(self.confusion.sum())

    def add(self, logits: torch.Tensor, labels: torch.Tensor, losses: torch.Tensor | None = None) -> None:
        """Count a batch of (B, N) logits against (B,) labels (and add its per-sample losses)."""
        logits, labels = logits.detach().float().cpu(), labels.cpu()
        ranked = logits.topk(min(max(self.ks), self.num_classes), dim=1).indices  # (B, k)
        for k in self.ks:
            self.topk_hits[k] += int((ranked[:, :k] == labels[:, None]).any(dim=1).sum())
        flat = labels * self.num_classes + ranked[:, 0]  # (B,) cell of the confusion matrix
        self.confusion += torch.bincount(flat, minlength=self.num_classes**2).view(self.num_classes, -1)
        if losses is not None:
            self.loss_sum += float(losses.detach().float().sum())

    def packed(self) -> torch.Tensor:
        """Everything as one float64 vector, for one all-reduce."""
        hits = torch.tensor([self.topk_hits[k] for k in self.ks], dtype=torch.float64)
        return torch.cat([self.confusion.flatten().double(), hits, torch.tensor([self.loss_sum], dtype=torch.float64)])

    def unpack(self, vector: torch.Tensor) -> ClassCounts:
        """The counts from a (summed) `packed` vector."""
        out = ClassCounts(self.num_classes, self.ks)
        cells = self.num_classes**2
        out.confusion = vector[:cells].round().long().view(self.num_classes, -1)
        out.topk_hits = {k: round(float(v)) for k, v in zip(self.ks, vector[cells:-1], strict=True)}
        out.loss_sum = float(vector[-1])
        return out

    def topk(self, k: int) -> float:
        """Share of samples whose true class is among the top k (0 when there are none)."""
        return self.topk_hits[k] / self.total if self.total else 0.0

    def loss(self) -> float:
        return self.loss_sum / self.total if self.total else 0.0

    def per_class(self) -> list[tuple[int, int]]:
        """(correct, total) per true class."""
        return [(int(self.confusion[i, i]), int(self.confusion[i].sum())) for i in range(self.num_classes)]

    def pairs(self) -> tuple[list[int], list[int]]:
        """(actual, predicted) per sample, expanded from the counts (for a confusion-matrix plot)."""
        actual, predicted = [], []
        for i, j in self.confusion.nonzero().tolist():
            count = int(self.confusion[i, j])
            actual += [i] * count
            predicted += [j] * count
        return actual, predicted


def chance_topk(k: int, num_classes: int) -> float:
    """Top-k accuracy of guessing k distinct classes uniformly at random."""
    return min(k, num_classes) / num_classes


def majority_share(counts: Sequence[int]) -> float:
    """Accuracy of always answering the most frequent class."""
    total = sum(counts)
    return max(counts) / total if total else 0.0
