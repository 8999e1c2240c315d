"""The seven compared traits of an avatar or a person (gender, glasses, hat, beard, hair, hair tone, skin tone) as
classes: of a manifest's trait columns, and of a single option value (models decode by them)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.core.traits import HAIR_TONES, NONE, SKIN_TONES, tone_to_rgb

# Hair option ids: the catalogue's short styles start at 2200, its long ones at 2300 (pipeline.core.traits).
LONG_HAIR_FROM = 2300


def _luma(tone: int) -> float:
    r, g, b = tone_to_rgb(tone)
    return 0.299 * r + 0.587 * g + 0.114 * b


def skin_tone_rank(tone: int) -> int:
    """The rank of a skin tone from the lightest (0) to the darkest (11) by brightness.

    Synthetic photos lighten dark skin so that Haar finds it, but keep this order; skin tone is compared by it.
    """
    order = sorted(SKIN_TONES, key=_luma, reverse=True)
    return order.index(int(tone))


def trait_classes(rows: pd.DataFrame, skin_tone_bins: int = 3) -> pd.DataFrame:
    """The compared traits of rows with trait columns, as class ids (-1 where the row has no ground truth).

    gender (male, female); glasses, hat, beard (none, some); hair (bald, short, long); hair_tone (the 12 catalogue
    tones); skin_tone (its brightness rank cut into `skin_tone_bins` equal groups, lightest first).
    """
    known = rows["gender"].notna() if "gender" in rows else pd.Series(False, index=rows.index)
    out = pd.DataFrame(index=rows.index)
    if not known.any():
        return out.assign(**{name: -1 for name in TRAITS})
    part = rows[known]
    hair = part["hair"].astype(int)
    values = {
        "gender": part["gender"].astype(int) - 1,
        "glasses": (part["glasses"].astype(int) != NONE).astype(int),
        "hat": (part["hat"].astype(int) != NONE).astype(int),
        "beard": (part["beard"].astype(int) != NONE).astype(int),
        "hair": np.where(hair == NONE, 0, np.where(hair >= LONG_HAIR_FROM, 2, 1)),
        "hair_tone": part["hair_tone"].astype(int).map(HAIR_TONES.index),
        "skin_tone": part["skin_tone"].astype(int).map(lambda t: skin_tone_rank(t) * skin_tone_bins // len(SKIN_TONES)),
    }
    for name in TRAITS:
        out[name] = -1
        out.loc[known, name] = np.asarray(values[name], dtype=np.int64)
    return out.astype(np.int64)


TRAITS = ("gender", "glasses", "hat", "beard", "hair", "hair_tone", "skin_tone")


def class_counts(skin_tone_bins: int) -> dict[str, int]:
    """How many classes each compared trait has."""
    return {
        "gender": 2,
        "glasses": 2,
        "hat": 2,
        "beard": 2,
        "hair": 3,
        "hair_tone": len(HAIR_TONES),
        "skin_tone": skin_tone_bins,
    }


def value_class(trait: str, value: int, skin_tone_bins: int = 3) -> int:
    """The class of one option value of a trait's key (the key has the trait's name; gender's values are 1 and 2)."""
    if trait == "gender":
        return int(value) - 1
    if trait in ("glasses", "hat", "beard"):
        return int(value != NONE)
    if trait == "hair":
        return 0 if value == NONE else 2 if value >= LONG_HAIR_FROM else 1
    if trait == "hair_tone":
        return HAIR_TONES.index(int(value))
    if trait == "skin_tone":
        return skin_tone_rank(int(value)) * skin_tone_bins // len(SKIN_TONES)
    raise ValueError(f"{trait!r} is not one of the compared traits {TRAITS}")
