"""Flat cartoon avatar renderer: one deterministic frontal head per trait combination, drawn with OpenCV."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.sandbox import parts
from pipeline.sandbox.drawing import Pen, affine, transform
from pipeline.sandbox.parts import BROW_Y, CX, EYE_DX, EYE_Y, MOUTH_Y, NOSE_Y, Head, Pens
from pipeline.sandbox.traits import BASE_SIZE, AvatarSpec

BACKGROUND = (244, 243, 238)


@dataclass(frozen=True)
class Landmarks:
    """Face points in pixels of the rendered image; left_eye is the IMAGE-left eye (smaller x)."""

    left_eye: tuple[float, float]
    right_eye: tuple[float, float]
    nose: tuple[float, float]
    mouth: tuple[float, float]
    face_box: tuple[float, float, float, float]  # x, y, w, h, roughly brows-to-chin like a Haar face box

    def transformed(self, face_matrix: np.ndarray, nose_matrix: np.ndarray | None = None) -> Landmarks:
        """Landmarks of base-unit points mapped through the feature (and nose) matrices of a posed head."""
        eyes = transform(face_matrix, [self.left_eye, self.right_eye])
        mouth = transform(face_matrix, [self.mouth])[0]
        nose = transform(face_matrix if nose_matrix is None else nose_matrix, [self.nose])[0]
        x, y, w, h = self.face_box
        corners = transform(face_matrix, [(x, y), (x + w, y), (x, y + h), (x + w, y + h)])
        (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
        return Landmarks(
            left_eye=(float(eyes[0, 0]), float(eyes[0, 1])),
            right_eye=(float(eyes[1, 0]), float(eyes[1, 1])),
            nose=(float(nose[0]), float(nose[1])),
            mouth=(float(mouth[0]), float(mouth[1])),
            face_box=(float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
        )


def base_landmarks(head: Head) -> Landmarks:
    """Landmarks in base units (a 256-pixel canvas) for a head geometry."""
    top = BROW_Y - 12.0
    return Landmarks(
        left_eye=(CX - EYE_DX, EYE_Y),
        right_eye=(CX + EYE_DX, EYE_Y),
        nose=(CX, NOSE_Y),
        mouth=(CX, MOUTH_Y),
        face_box=(CX - head.hw, top, 2 * head.hw, head.chin - top),
    )


def avatar_landmarks(spec: AvatarSpec) -> Landmarks:
    """Ground-truth face points of `render_avatar(spec)`, computed without drawing."""
    scale = float(spec.scale)
    matrix = affine(scale, scale, 0.0, (0.0, 0.0), (0.0, 0.0))
    return base_landmarks(Head.from_spec(spec)).transformed(matrix)


def render_avatar(spec: AvatarSpec) -> np.ndarray:
    """Draw the avatar of `spec` as an (S, S, 3) uint8 RGB image, S = BASE_SIZE * spec.scale."""
    size = BASE_SIZE * spec.scale
    image = np.empty((size, size, 3), np.uint8)
    image[:] = BACKGROUND
    head = Head.from_spec(spec)
    deluxe = head.deluxe
    pen = Pen(image, affine(spec.scale, spec.scale, 0.0, (0.0, 0.0), (0.0, 0.0)), 1.3 if deluxe else 2.6,
              0.55 if deluxe else 0.32)  # fmt: skip
    parts.draw_head(Pens(pen, pen, pen), head)
    return image


def encode_png(rgb: np.ndarray) -> bytes:
    """Encode an RGB uint8 image as PNG bytes.

    Raises:
        ValueError: if OpenCV cannot encode the array.
    """
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"cv2.imencode could not encode an array of shape {rgb.shape} as PNG")
    return buf.tobytes()
