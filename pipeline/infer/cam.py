"""`i2c cam`: the trained CAM model on a photo or on every frame of a video: heat map, predicted identity, box."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from pipeline.core.viz import letterbox
from pipeline.dataset.loader import to_model_input
from pipeline.evaluate.cam_boxes import Box, cam_box, draw_overlay
from pipeline.faces.detect import ImageDecodeError, decode_image
from pipeline.models.cam import CamClassifier, heat_maps

PHOTO_OUT = (".png",)
VIDEO_OUT = (".gif", ".mp4")
GIF_MAX_SIDE = 480  # GIF frames are palette images of the whole video in memory: keep them small


class CamInputError(ValueError):
    """The input is neither a photo nor a video, or the output type does not fit it; the message says what to do."""


@dataclass(frozen=True)
class FrameAnswer:
    """The model's answer for one photo or frame, in that image's pixels.

    Attributes:
        identity / probability: the predicted identity and its softmax probability.
        box: the CAM box (None for a flat map); regions: every region's box that `box` came from.
        heat: the (H, W) map in [0, 1].
    """

    identity: str
    probability: float
    box: Box | None
    regions: list[Box]
    heat: np.ndarray


def _settings(model: CamClassifier) -> tuple[int, float, str, tuple[int, int], bool, float]:
    """(photo_size, threshold, box mode, occlusion, flip, box scale) as train_cam evaluated the model (in cam.pt)."""
    params = model.info.get("params", {})
    occlusion = (int(params.get("occlusion_patch", 32)), int(params.get("occlusion_stride", 16)))
    return (
        int(model.info.get("photo_size", 256)),
        params.get("threshold", 0.2),
        params.get("boxes", "largest"),
        occlusion,
        bool(params.get("eval_flip", False)),
        float(params.get("box_scale", 1.0)),
    )


@torch.no_grad()
def answer_frames(model: CamClassifier, frames: list[np.ndarray]) -> list[FrameAnswer]:
    """Letterbox RGB frames as `pack` did, run the model, and map each heat map and box back onto the frame."""
    side, threshold, mode, occlusion, flip, scale = _settings(model)
    fits = [letterbox(frame, side) for frame in frames]
    device = next(model.parameters()).device
    batch = torch.from_numpy(np.stack([square for square, _ in fits])).to(device)  # (B, side, side, 3)
    logits, maps = heat_maps(model.net, to_model_input(batch, model.input_size), side, occlusion, flip)
    probabilities = logits.softmax(dim=1)
    answers = []
    for frame, (_, fit), heat, p in zip(frames, fits, maps.numpy(), probabilities, strict=True):
        # the part of the square the photo fills, stretched back to the photo's own pixels
        inner = heat[fit.pad_y : fit.pad_y + round(fit.raw_height * fit.scale_y), fit.pad_x :]
        inner = inner[:, : round(fit.raw_width * fit.scale_x)]
        heat_full = cv2.resize(inner, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
        box, regions = cam_box(heat_full, threshold, mode, scale)
        top = int(p.argmax())
        answers.append(FrameAnswer(model.labels[top], float(p[top]), box, regions, heat_full))
    return answers


def render(frame: np.ndarray, answer: FrameAnswer) -> np.ndarray:
    """The frame under its heat map, with the box(es) and `identity probability` written on it."""
    drawn = answer.regions if len(answer.regions) > 1 else ([answer.box] if answer.box is not None else [])
    return draw_overlay(frame, answer.heat, drawn, text=f"{answer.identity} {answer.probability:.0%}")


def decode_photo(data: bytes, path: Path) -> np.ndarray:
    """The RGB pixels of a still image's bytes (EXIF rotation applied).

    Raises:
        CamInputError: when the image is damaged (a truncated JPEG is a damaged photo, not a video).
    """
    try:
        return decode_image(data)
    except ImageDecodeError as exc:
        raise CamInputError(f"{path} is a damaged image ({exc}); pass a photo that opens") from None


def video_frames(path: Path) -> tuple[Iterator[np.ndarray], int, float]:
    """(RGB frames, frame count from the header or 0 when unknown, fps) of a video OpenCV can read.

    Raises:
        CamInputError: when OpenCV cannot open it or reads no frame of it.
    """
    unknown = f"{path} is neither a photo nor a video OpenCV can read; pass a JPEG/PNG photo or an MP4/AVI video"
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise CamInputError(unknown)
    ok, first = capture.read()
    if not ok or first is None:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        capture.release()
        if count <= 1:  # OpenCV's image-sequence reader calls any unreadable file a one-frame video
            raise CamInputError(unknown)
        raise CamInputError(f"{path} is a video none of whose {count} frames can be read; pass a video that plays")
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0) or 25.0

    def frames() -> Iterator[np.ndarray]:
        frame = first
        try:
            while frame is not None:
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                ok, frame = capture.read()
                frame = frame if ok else None
        finally:
            capture.release()

    return frames(), count, fps


def check_suffix(out: Path, allowed: tuple[str, ...], what: str) -> None:
    """Refuse an output suffix that cannot hold `what`."""
    if out.suffix.lower() not in allowed:
        raise CamInputError(f"{out}: the overlay of {what} is written as {' or '.join(allowed)}; change -o")


def face_found(rgb: np.ndarray) -> str:
    """ "" when align's detector finds a usable face in the photo, else its reason (no_face, profile, ...)."""
    from pipeline.core.params import AlignParams
    from pipeline.faces.align import find_face

    return find_face(rgb, AlignParams()).reason


def cam_photo(model: CamClassifier, rgb: np.ndarray, out: Path) -> FrameAnswer:
    """Write the photo's overlay PNG; returns the answer."""
    from pipeline.core.viz import save_png

    check_suffix(out, PHOTO_OUT, "a photo")
    answer = answer_frames(model, [rgb])[0]
    save_png(out, render(rgb, answer))
    return answer


def cam_video(
    model: CamClassifier, frames: Iterator[np.ndarray], count: int, fps: float, out: Path, batch: int = 16
) -> list[FrameAnswer]:
    """Write every frame's overlay as an MP4 (OpenCV) or GIF (Pillow), with a progress bar; returns the answers."""
    check_suffix(out, VIDEO_OUT, "a video")
    out.parent.mkdir(parents=True, exist_ok=True)
    gif = out.suffix.lower() == ".gif"
    writer, pictures, answers = None, [], []
    source = iter(frames)
    try:
        with tqdm(total=count or None, desc=f"cam {out.name}", unit="frame") as bar:
            while chunk := list(islice(source, batch)):
                for shown, answer in zip(chunk, answer_frames(model, chunk), strict=True):
                    picture = render(shown, answer)
                    answers.append(answer)
                    if gif:
                        pictures.append(_shrink(picture, GIF_MAX_SIDE))
                        continue
                    if writer is None:
                        size = (picture.shape[1], picture.shape[0])
                        writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
                        if not writer.isOpened():
                            raise CamInputError(f"OpenCV cannot write {out} (no MP4 encoder here?); use -o out.gif")
                    writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
                bar.update(len(chunk))
    finally:
        if writer is not None:
            writer.release()
    if gif and pictures:
        import io

        from PIL import Image

        from pipeline.core.storage import atomic_write_bytes

        images = [Image.fromarray(p) for p in pictures]
        buffer = io.BytesIO()
        images[0].save(
            buffer, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0
        )
        atomic_write_bytes(out, buffer.getvalue())
    return answers


def _shrink(rgb: np.ndarray, max_side: int) -> np.ndarray:
    scale = max_side / max(rgb.shape[:2])
    if scale >= 1:
        return rgb
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
