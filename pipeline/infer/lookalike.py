"""`i2c lookalike`: which trained identity a photo looks like, and the most similar training photo of that person."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from pydantic import ValidationError

from pipeline.core.params import AlignParams
from pipeline.core.viz import image_grid, letterbox
from pipeline.dataset.loader import ShardDataset
from pipeline.faces.align import AlignResult, align_bytes
from pipeline.models.face_encoder import FaceEncoder

# What each align reject means to someone who handed us one photo.
REJECTS = {
    "decode_error": "is not an image that can be decoded (JPEG, PNG, WebP, BMP, ...)",
    "no_face": "shows no face the detector can find; use a frontal, well-lit photo",
    "not_a_face": "shows nothing the detector confirms as a face; use a frontal, well-lit photo",
    "multiple_faces": "shows several faces of similar size; crop it to one person",
    "too_small": "has a face too small to align; use a larger or closer photo",
    "profile": "shows a face in profile; use a frontal photo",
    "blurry": "is too blurry around the face; use a sharper photo",
    "no_eyes": "has a face whose eyes cannot be found; use a frontal photo",
}


class LookalikeError(ValueError):
    """The photo cannot be answered (not an image, no usable face); the message names it and what to do."""


@dataclass(frozen=True)
class Match:
    """The answer for one photo.

    Attributes:
        ranking: the top-k (identity, probability), best first.
        aligned: the aligned face f saw, (S, S, 3) uint8.
        align: the detection and landmarks.
    """

    ranking: list[tuple[str, float]]
    aligned: np.ndarray
    align: AlignResult


def align_photo(data: bytes, encoder: FaceEncoder, name: str = "the photo") -> AlignResult:
    """Detect and align the face with the align params f was trained with (saved in f.pt).

    Raises:
        LookalikeError: when the bytes are not an image or hold no usable face.
    """
    try:
        params = AlignParams.model_validate(encoder.info.get("align", {}))
    except ValidationError as exc:
        raise LookalikeError(
            f"the align params saved in f.pt do not fit this version ({exc.errors()[0]['msg']}); "
            "re-train f with `dvc repro pretrain_f`"
        ) from None
    result = align_bytes(data, params)
    if result.status != "ok" or result.image is None:
        why = REJECTS.get(result.reason, f"was rejected by the aligner ({result.reason})")
        raise LookalikeError(f"{name} {why}")
    return result


@torch.no_grad()
def lookalike(data: bytes, encoder: FaceEncoder, top: int = 5, name: str = "the photo") -> Match:
    """The top-k identities of the face in a photo, with softmax probabilities.

    Raises:
        LookalikeError: when the bytes are not an image or hold no usable face.
    """
    result = align_photo(data, encoder, name)
    probabilities = encoder.probabilities(torch.from_numpy(result.image)[None])[0].cpu()  # (N,)
    values, indices = probabilities.topk(min(top, len(encoder.labels)))
    ranking = [(encoder.labels[i], float(p)) for p, i in zip(values.tolist(), indices.tolist(), strict=True)]
    return Match(ranking, result.image, result)


@torch.no_grad()
def most_similar(encoder: FaceEncoder, face: np.ndarray, shards: Path, identity: str) -> tuple[np.ndarray, float]:
    """The training photo of `identity` whose f is closest (cosine) to f of `face`, and that cosine.

    Raises:
        LookalikeError: when the training split holds no photo of `identity`.
        pipeline.dataset.loader.ShardError: when the shards are missing or damaged.
    """
    train = ShardDataset(shards, "train")
    positions = np.flatnonzero((train.index["identity"] == identity).to_numpy())
    if not len(positions):
        raise LookalikeError(f"{shards} has no training photo of {identity!r}; were the shards re-packed since f?")
    images = train.gather(positions)["image"]  # (M, H, W, 3)
    query = encoder.embed(torch.from_numpy(face)[None])  # (1, D)
    gallery = torch.cat([encoder.embed(chunk) for chunk in images.split(64)])  # (M, D)
    cosines = (gallery @ query.T).squeeze(1).cpu()  # (M,), both sides are unit vectors
    best = int(cosines.argmax())
    return images[best].numpy(), float(cosines[best])


def show_sheet(photo: np.ndarray, match: Match, similar: np.ndarray, cosine: float) -> np.ndarray:
    """Input photo | aligned face | most similar training photo of the top identity, labelled."""
    side = match.aligned.shape[0]
    identity, probability = match.ranking[0]
    tiles = [letterbox(photo, side, fill=255)[0], match.aligned, cv2.resize(similar, (side, side))]
    labels = ["input", f"aligned: {identity} {probability:.0%}", f"closest photo, cos {cosine:.2f}"]
    return image_grid(tiles, cols=3, pad=4, labels=labels)
