"""Synthetic identity photos: the avatar trait space drawn shaded, posed and lit on textured backgrounds."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
import skimage.data

from pipeline.core.traits import GENDERS, NONE, PEOPLE_WITHOUT, AvatarSpec, catalogue_options, make_spec
from pipeline.sandbox.avatar import Head, Landmarks, Pens, draw_head, luma, posed_landmarks
from pipeline.sandbox.drawing import CX, EYE_DX, EYE_Y, FACE_TOP, HeadShape, Pen, affine, compose, shade, smooth

KINDS = ("single", "no_face", "two_faces")
NO_FACE_RATE, TWO_FACES_RATE = 0.05, 0.05
JPEG_QUALITY = (60, 95)
# Bundled scikit-image pictures without faces: camera and astronaut have one, and the blobs of moon, cell, gravel and
# immunohistochemistry make OpenCV's Haar cascade see faces that are not there.
TEXTURES = ("brick", "grass", "rocket", "coffee", "hubble_deep_field")
# Lighting, tuned so that OpenCV's frontal-face Haar cascade finds these faces as it finds real ones: a round head that
# darkens towards its sides, dark eye sockets, a lit nose bridge and cheekbones, and a shadow under the chin.
ROUNDNESS = 0.75  # darkening at the sides of the head
SOCKETS = 0.3  # darkening around the eyes
FACE_KEY_LUMA = (110, 150)  # photographers expose for the face: darker skin gets more light, never less
KEY_POWER = 0.75  # < 1 keeps darker skin darker in photos (the trait survives) while still lifting it
CLOTHES = ((40, 60, 110), (150, 30, 40), (230, 230, 225), (30, 30, 30), (90, 120, 70), (200, 160, 60),
           (120, 120, 130), (70, 40, 90), (210, 110, 60), (20, 90, 110))  # fmt: skip


def _rng(*key: object) -> random.Random:
    """A generator seeded by a stable hash of `key` (never Python's salted hash())."""
    digest = hashlib.sha256("\x1f".join(map(str, key)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def identity_spec(name: str, seed: int) -> AvatarSpec:
    """The fixed traits of a named synthetic identity: gender, style 5, and one catalogue option per key."""
    rng = _rng("identity", seed, name)
    gender = rng.choice(GENDERS)
    options = catalogue_options(gender, 5)
    traits = {key: values[rng.randrange(len(values))] for key, values in sorted(options.items())}
    for key, without in PEOPLE_WITHOUT.items():  # people rarely wear hats, and fewer wear glasses than a uniform draw
        if rng.random() < without:
            traits[key] = NONE
    return make_spec(gender, 5, traits)


def photo_kind(name: str, index: int, seed: int) -> str:
    """Whether photo `index` of `name` shows one face (~90 %), none (~5 %) or two (~5 %)."""
    u = _rng("kind", seed, name, index).random()
    return "no_face" if u < NO_FACE_RATE else "two_faces" if u < NO_FACE_RATE + TWO_FACES_RATE else "single"


def photo_jpeg_quality(name: str, index: int, seed: int) -> int:
    """The JPEG quality (60-95) the photo host encodes photo `index` of `name` with."""
    return _rng("jpeg", seed, name, index).randint(*JPEG_QUALITY)


@dataclass(frozen=True)
class PhotoRender:
    """One synthetic photo before JPEG encoding, with the ground truth of every face drawn."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    faces: tuple[Landmarks, ...]  # ground-truth landmarks of each face drawn (0, 1 or 2)
    kind: str  # "single" | "no_face" | "two_faces"


@cache
def _texture(name: str) -> np.ndarray:
    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = np.ascontiguousarray(image[..., :3])
    image.flags.writeable = False
    return image


@cache
def _noise_tile() -> np.ndarray:
    """Fixed unit-variance sensor noise, cropped at random offsets so that no photo draws fresh noise."""
    tile = np.random.default_rng(0).standard_normal((1024, 1024, 3), dtype=np.float32)
    tile.flags.writeable = False
    return tile


def _background(rng: random.Random, w: int, h: int) -> np.ndarray:
    """A blurred, tinted crop of a bundled texture, or a two-colour gradient."""
    if rng.random() < 0.3:
        c0, c1 = (np.array([rng.randint(20, 180) for _ in range(3)], np.float32) for _ in range(2))
        angle = rng.uniform(0, 2 * np.pi)
        y, x = np.mgrid[0:16, 0:16].astype(np.float32) / 15
        t = np.clip(0.5 + (x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle), 0, 1)[..., None]
        small = c0 * (1 - t) + c1 * t
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.uint8)
    source = _texture(rng.choice(TEXTURES))
    sh, sw = source.shape[:2]
    frac = rng.uniform(0.35, 1.0)
    cw = min(sw, int(sh * w / h * frac), int(sw * frac))
    ch = min(sh, int(cw * h / w))
    x0, y0 = rng.randint(0, sw - cw), rng.randint(0, sh - ch)
    image = cv2.resize(source[y0 : y0 + ch, x0 : x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR)
    contrast, brightness = rng.uniform(0.3, 0.75), rng.uniform(0.55, 1.0)
    tint = np.array([rng.uniform(0.5, 1.1) for _ in range(3)]) * contrast * brightness
    offset = np.array([rng.uniform(10, 90) for _ in range(3)]) * (1 - contrast) * brightness
    image = cv2.transform(image, np.hstack([np.diag(tint), offset[:, None]]))
    # Portraits keep the background out of focus, which also keeps textures from looking like faces.
    return cv2.GaussianBlur(image, (0, 0), rng.uniform(2.0, 4.5) * w / 400)


@dataclass(frozen=True)
class _Pose:
    """Where and how one head is drawn: matrices from base units to pixels, and the light."""

    head: np.ndarray
    face: np.ndarray
    nose: np.ndarray
    light: tuple[float, float]
    strength: float
    gain: float  # key light on the person: dark skin gets more of it, as photographers expose for faces


def _pose(rng: random.Random, shape: HeadShape, center: tuple[float, float], face_px: float, skin_luma: float) -> _Pose:
    """A random yaw/roll pose with the face box (face_px wide) centred near `center`."""
    yaw, roll = rng.uniform(-1.0, 1.0), rng.uniform(-12.0, 12.0)
    scale = face_px / (2 * shape.hw)
    head = affine(scale * (1 - 0.1 * abs(yaw)), scale, roll, (CX, (FACE_TOP + shape.chin) / 2), center)
    face = compose(head, affine(1 - 0.05 * abs(yaw), 1, 0, (CX, 0), (CX + 7 * yaw, 0)))
    nose = compose(head, affine(1, 1, 0, (CX, 0), (CX + 11 * yaw, 0)))
    angle = rng.uniform(0, 2 * np.pi)
    gain = max(1.0, rng.uniform(*FACE_KEY_LUMA) / skin_luma) ** KEY_POWER
    return _Pose(head, face, nose, (float(np.cos(angle)), float(np.sin(angle))), rng.uniform(0.12, 0.35), gain)


def _draw_person(image: np.ndarray, head: Head, pose: _Pose, clothes: tuple[int, int, int], face: bool = True) -> None:
    """Clothes, neck and head (or the back of a head when `face` is False), then shading by the light."""
    mask = np.zeros(image.shape[:2], np.uint8)
    pen = Pen(image, pose.head, mask=mask)
    torso = smooth([(CX - 168, 330), (CX - 150, 275), (CX - 110, 252), (CX - 55, 240), (CX + 55, 240),
                    (CX + 110, 252), (CX + 150, 275), (CX + 168, 330)], False, 2)  # fmt: skip
    arms = np.array([(CX + 215, 560), (CX + 240, 3000), (CX - 240, 3000), (CX - 215, 560)])
    pen.fill(np.vstack([torso, arms]), clothes)
    if face:
        pen.fill(np.array([(CX - 40, 244), (CX, 282), (CX + 40, 244)]), shade(head.skin, 0.85))
        draw_head(Pens(pen, pen.at(pose.face), pen.at(pose.nose)), head)
    else:
        pen.fill(np.array([(CX - 34, 200), (CX - 36, 262), (CX + 36, 262), (CX + 34, 200)]), shade(head.skin, 0.9))
        pen.fill(head.shape.outline(grow=6), head.hair if head.parts["hair"] != NONE else head.skin)
    _shade(image, mask, head.shape, pose, face)


def _shade(image: np.ndarray, mask: np.ndarray, shape: HeadShape, pose: _Pose, face: bool) -> None:
    """Multiply the drawn person by a smooth lighting field: light direction, roundness, eye sockets, nose."""
    ys, xs = np.nonzero(mask[::4, ::4])
    if len(xs) == 0:
        return
    x0, y0 = xs.min() * 4, ys.min() * 4
    x1, y1 = min(xs.max() * 4 + 4, mask.shape[1]), min(ys.max() * 4 + 4, mask.shape[0])
    gy, gx = np.mgrid[y0:y1:4, x0:x1:4].astype(np.float32)  # the field is smooth: a quarter resolution will do

    def base(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inv = cv2.invertAffineTransform(matrix)
        return inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2], inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]

    u, v = base(pose.head)
    fu, fv = base(pose.face)
    dx = np.clip((u - CX) / shape.hw, -1.5, 1.5)
    dy = np.clip((v - shape.mid) / np.where(v < shape.mid, shape.mid - shape.top, shape.chin - shape.mid), -1.5, 1.5)
    field = 1 + pose.strength * (dx * pose.light[0] + dy * pose.light[1])
    head = np.clip((shape.chin + 15 - v) / 20, 0, 1)  # the head is round; the clothes below are not
    field -= ROUNDNESS * head * np.clip(dx**2 + 0.5 * dy**2 - 0.3, 0, 1)

    def bump(cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
        return np.exp(-(((fu - cx) / sx) ** 2 + ((fv - cy) / sy) ** 2))

    if face:
        field -= SOCKETS * (bump(CX - EYE_DX, EYE_Y - 4, 20, 11) + bump(CX + EYE_DX, EYE_Y - 4, 20, 11))
        field += 0.12 * bump(CX, 140, 6, 18) - 0.15 * bump(CX, 166, 10, 4)  # nose bridge, under the nose
        field += 0.08 * (bump(CX - 30, 160, 12, 10) + bump(CX + 30, 160, 12, 10))  # cheekbones
    under_chin = (v > shape.chin - 4) * np.exp(-(((u - CX) / (0.6 * shape.hw)) ** 4))
    field -= 0.35 * np.exp(-(((v - shape.chin - 10) / 16) ** 2)) * under_chin
    field *= 1 + (pose.gain - 1) * np.clip(1.4 - dx**2 - dy**2, 0, 1)  # the key light is aimed at the face
    full = cv2.resize(field, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    weight = mask[y0:y1, x0:x1].astype(np.float32) / 255
    gain = (1 + (full - 1) * weight)[..., None]
    roi = image[y0:y1, x0:x1]
    roi[:] = np.clip(roi * gain, 0, 255).astype(np.uint8)


def _place(
    rng: random.Random, w: int, h: int, shape: HeadShape, frac: tuple[float, float], xs: tuple[float, float]
) -> tuple[float, tuple[float, float]]:
    """Face width in pixels and the face-box centre, drawn so that the whole (rolled) face box fits in the image."""
    aspect = (shape.chin - FACE_TOP) / (2 * shape.hw)  # face box height / width
    face_px = min(rng.uniform(*frac) * w, 0.8 * h / aspect)
    x = float(np.clip(rng.uniform(*xs) * w, 0.6 * face_px, w - 0.6 * face_px))
    y_lo = 0.62 * face_px * aspect
    return face_px, (x, rng.uniform(y_lo, max(y_lo, min(h - y_lo, 0.6 * h))))


def render_photo(name: str, index: int, seed: int) -> PhotoRender:
    """Draw photo `index` of the synthetic identity `name`: deterministic per (name, index, seed).

    A "single" photo shows the identity, a "two_faces" photo shows it beside itself or beside a derived companion,
    and a "no_face" photo shows background, or someone seen from behind.
    """
    rng = _rng("photo", seed, name, index)
    kind = photo_kind(name, index, seed)
    w = rng.randint(320, 640)
    h = round(w / rng.uniform(3 / 4, 4 / 3))
    image = _background(rng, w, h)
    spec = identity_spec(name, seed)
    if kind == "single":  # (spec, face width as a share of the image width, where the face centre may go)
        people = [(spec, (0.2, 0.45), (0.3, 0.7))]
    elif kind == "two_faces":
        companion = spec if rng.random() < 0.5 else identity_spec(f"{name}#{index}", seed)
        people = [(spec, (0.16, 0.24), (0.24, 0.28)), (companion, (0.16, 0.24), (0.74, 0.78))]
    else:
        people = [(spec, (0.2, 0.4), (0.25, 0.75))] if rng.random() < 0.7 else []
    faces: list[Landmarks] = []
    for person, width, xs in people:
        head = Head.from_spec(person, photo=True)
        face_px, center = _place(rng, w, h, head.shape, width, xs)
        pose = _pose(rng, head.shape, center, face_px, luma(head.skin))
        _draw_person(image, head, pose, CLOTHES[rng.randrange(len(CLOTHES))], face=kind != "no_face")
        if kind != "no_face":
            faces.append(posed_landmarks(head.shape, pose.face, pose.nose))
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.3) * w / 480)
    noise = _noise_tile()
    ny, nx = rng.randint(0, noise.shape[0] - h), rng.randint(0, noise.shape[1] - w)
    noisy = cv2.scaleAdd(noise[ny : ny + h, nx : nx + w], rng.uniform(1.5, 6.0), image.astype(np.float32))
    return PhotoRender(np.clip(noisy, 0, 255).astype(np.uint8), tuple(faces), kind)


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """Encode an RGB uint8 image as JPEG bytes at `quality` (1-100).

    Raises:
        ValueError: if the quality is out of range or OpenCV cannot encode the array.
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"cv2.imencode could not encode an array of shape {rgb.shape} as JPEG")
    return buf.tobytes()
