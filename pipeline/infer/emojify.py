"""`i2c emojify`: a photo to an emoji through the DTN: detect, align, f, g (and the aligned face beside it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from pipeline.dataset.loader import to_uint8_images
from pipeline.faces.align import AlignResult
from pipeline.infer.lookalike import LookalikeError, align_photo
from pipeline.models.dtn import load_generator
from pipeline.models.face_encoder import FaceEncoder


class EmojifyError(LookalikeError):
    """The photo or the models cannot give an emoji; the message names the file and what to do."""


@dataclass(frozen=True)
class Emoji:
    """An emoji made from one photo: the emoji, the aligned face f saw, and the detection."""

    emoji: np.ndarray  # (S, S, 3) uint8
    aligned: np.ndarray  # (A, A, 3) uint8
    align: AlignResult


class Emojifier:
    """f and g together, checked to belong together (g was trained on this f).

    Raises:
        FileNotFoundError: when dtn.pt is missing (`dvc repro train_dtn`).
        EmojifyError: when dtn.pt was trained on another f than the one given.
    """

    def __init__(self, encoder: FaceEncoder, dtn_path: Path) -> None:
        self.encoder = encoder
        self.g, self.info = load_generator(dtn_path, next(encoder.parameters()).device)
        trained_on = self.info.get("f_key")
        current = encoder.info.get("run", {}).get("key")
        if trained_on and current and trained_on != current:
            raise EmojifyError(
                f"{dtn_path} was trained on another f (run key {trained_on}, f.pt now has {current}); "
                "re-train it with `dvc repro train_dtn`"
            )

    @torch.no_grad()
    def __call__(self, data: bytes, name: str = "the photo") -> Emoji:
        """The emoji of the one face in a photo's bytes.

        Raises:
            LookalikeError: when the bytes are not an image or hold no usable face.
        """
        result = align_photo(data, self.encoder, name)
        embedding = self.encoder.embed(torch.from_numpy(result.image)[None])  # (1, D)
        emoji = to_uint8_images(self.g(embedding))[0].numpy()  # (S, S, 3)
        return Emoji(emoji, result.image, result)


def side_by_side(emoji: Emoji) -> np.ndarray:
    """The aligned face and its emoji, both at the aligned face's side, 4 px apart."""
    side = emoji.aligned.shape[0]
    big = cv2.resize(emoji.emoji, (side, side), interpolation=cv2.INTER_NEAREST)
    gap = np.full((side, 4, 3), 255, np.uint8)
    return np.concatenate([emoji.aligned, gap, big], axis=1)
