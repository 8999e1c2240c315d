"""How well predicted avatar parameters match a person: balanced accuracy per trait with its chance, per key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.core.traits import AvatarSpec
from pipeline.dataset.loader import to_model_input
from pipeline.evaluate.traits import Balanced, balanced_table, trait_classes
from pipeline.models.avatar_params import PREDICTED_KEYS, AvatarReader, spec_rows

MARGIN = 0.25  # a trait counts as read when its balanced accuracy is at least chance + this


@torch.no_grad()
def predict_specs(reader: AvatarReader, images: torch.Tensor, style: int, batch: int = 128) -> list[AvatarSpec]:
    """The avatar of each uint8 aligned image (N, H, W, 3), a photo or an avatar: the reader's heads, decoded within
    the catalogue."""
    device = next(reader.parameters()).device
    specs: list[AvatarSpec] = []
    for chunk in images.split(batch):
        specs += reader.decode(reader(to_model_input(chunk.to(device), reader.input_size)), style)
    return specs


def trait_scores(specs: Sequence[AvatarSpec], rows: pd.DataFrame, bins: int) -> dict[str, Balanced]:
    """Balanced accuracy of each compared trait (gender, glasses, hat, beard, hair, hair_tone, skin_tone) of the
    predicted avatars against the rows' ground truth (rows without one are left out)."""
    predicted = trait_classes(spec_rows(specs), bins)
    return balanced_table(predicted, trait_classes(rows.reset_index(drop=True), bins))


def key_accuracy(specs: Sequence[AvatarSpec], rows: pd.DataFrame) -> dict[str, float]:
    """The share of rows whose predicted value equals the true one, for every key the rows know (jaw, nose, ...)."""
    predicted = spec_rows(specs)
    truth = rows.reset_index(drop=True)
    out = {}
    for key in PREDICTED_KEYS:
        if key not in truth or truth[key].isna().all():
            continue
        known = truth[key].notna().to_numpy()
        hits = predicted[key].to_numpy()[known] == truth[key].to_numpy()[known].astype(int)
        out[key] = round(float(hits.mean()), 4)
    return out


def score_table(scores: dict[str, Balanced]) -> dict[str, dict[str, Any]]:
    """{trait: {balanced_accuracy, chance, classes, photos}} rounded for a metrics file."""
    return {
        name: {
            "balanced_accuracy": round(s.accuracy, 4),
            "chance": round(s.chance, 4),
            "classes": s.classes,
            "count": s.count,
        }
        for name, s in scores.items()
    }


def traits_read(scores: dict[str, Balanced], margin: float = MARGIN) -> int:
    """How many traits reach chance + margin."""
    return sum(s.accuracy >= s.chance + margin for s in scores.values())


def mean_balanced(scores: dict[str, Balanced]) -> float:
    """The mean balanced accuracy over the traits (model selection's score)."""
    return float(np.mean([s.accuracy for s in scores.values()])) if scores else 0.0
