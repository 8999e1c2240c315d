"""`i2c emojify`: a photo to an avatar. The default route predicts the avatar API's parameters from the aligned face
and lets the avatar engine draw them (always a clean avatar); `--dtn` also draws the DTN's emoji, g(f(x))."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from pipeline.core.traits import AvatarSpec
from pipeline.dataset.loader import to_uint8_images
from pipeline.evaluate.avatar_params import predict_specs
from pipeline.faces.align import AlignResult
from pipeline.infer.lookalike import LookalikeError, align_photo
from pipeline.models.avatar_params import load_avatar_params
from pipeline.models.dtn import load_generator
from pipeline.models.face_encoder import FaceEncoder
from pipeline.sandbox.app import preview_url
from pipeline.sandbox.avatar import render_avatar


class EmojifyError(LookalikeError):
    """The photo or the models cannot give an emoji; the message names the file and what to do."""


@dataclass(frozen=True)
class Emoji:
    """What one photo gave: the avatar's parameters and the engine's render, the DTN's emoji when asked, the aligned
    face f saw, and the detection."""

    spec: AvatarSpec
    avatar: np.ndarray  # (256, 256, 3) uint8: the engine's render of `spec`
    dtn: np.ndarray | None  # (S, S, 3) uint8: g(f(x)), when a DTN was loaded
    aligned: np.ndarray  # (A, A, 3) uint8
    align: AlignResult


def _check_f(path: Path, trained_on: Any, encoder: FaceEncoder, stage: str) -> None:
    current = encoder.info.get("run", {}).get("key")
    if trained_on and current and trained_on != current:
        raise EmojifyError(
            f"{path} was trained on another f (run key {trained_on}, f.pt now has {current}); "
            f"re-train it with `dvc repro {stage}`"
        )


class Emojifier:
    """The avatar-parameter reader and (optionally) the DTN's g, checked to belong to this f, loaded once. f gives the
    align params (saved in f.pt, the ones the shards were aligned with) and the DTN's input.

    Raises:
        FileNotFoundError: when a model file is missing (the message names the stage that writes it).
        EmojifyError: when a model was trained on another f than the one given.
        pipeline.core.checkpoint.CheckpointError: when a model file is corrupt.
    """

    def __init__(self, encoder: FaceEncoder, params_path: Path, dtn_path: Path | None = None, style: int | None = None):
        self.encoder = encoder
        device = next(encoder.parameters()).device
        self.reader, self.info = load_avatar_params(params_path, device)
        self.style = int(style or self.info.get("style", 5))
        self.g = None
        if dtn_path is not None:
            self.g, dtn_info = load_generator(dtn_path, device)
            _check_f(dtn_path, dtn_info.get("f_key"), encoder, "train_dtn")

    @torch.no_grad()
    def __call__(self, data: bytes, name: str = "the photo") -> Emoji:
        """The avatar of the one face in a photo's bytes.

        Raises:
            LookalikeError: when the bytes are not an image or hold no usable face.
        """
        result = align_photo(data, self.encoder, name)
        face = torch.from_numpy(result.image)[None]  # (1, A, A, 3) uint8
        spec = predict_specs(self.reader, face, self.style)[0]
        dtn = to_uint8_images(self.g(self.encoder.embed(face)))[0].numpy() if self.g is not None else None
        return Emoji(spec, render_avatar(spec), dtn, result.image, result)


def query_json(spec: AvatarSpec, endpoint: str | None = None) -> dict[str, Any]:
    """The avatar API's query parameters as the crawl manifest records them (integers; tones as decimal RGB, -1 for
    none), and `url`: the endpoint's preview URL of them when an endpoint (not the offline sandbox) is configured."""
    out: dict[str, Any] = {key: int(value) for key, value in spec.query().items()}
    if endpoint and endpoint != "sandbox":
        out["url"] = preview_url(endpoint.rstrip("/"), spec)
    return out


def side_by_side(face: np.ndarray, *images: np.ndarray) -> np.ndarray:
    """The aligned face and the given images, all at the aligned face's side, 4 px apart."""
    side = face.shape[0]
    gap = np.full((side, 4, 3), 255, np.uint8)
    tiles = [face]
    for image in images:
        tiles += [gap, cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)]
    return np.concatenate(tiles, axis=1)
