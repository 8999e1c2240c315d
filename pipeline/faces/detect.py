"""Haar-cascade face detection on a downscaled grey copy, with typed rejects mapped back to the original image."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

Box = tuple[float, float, float, float]  # (x, y, w, h), x/y = top-left corner, original-image pixels
Point = tuple[float, float]  # (x, y) in pixel-centre coordinates: the centre of pixel (0, 0) is (0.0, 0.0)

# Every reason a photo can be rejected for, in the order the checks run (align adds the last two).
REJECT_REASONS = ("decode_error", "no_face", "profile", "too_small", "multiple_faces", "blurry", "no_eyes")
MULTIPLE_FACES_POLICIES = ("reject", "largest")


class ImageDecodeError(ValueError):
    """Raised for bytes that are not a complete image; `reason` is "empty", "truncated" or "undecodable"."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class DetectConfig:
    """Face-detection settings; pixel sizes are in the original image unless the name says otherwise.

    Attributes:
        cascade: frontal-face cascade file name in cv2.data.haarcascades, or an absolute path.
        profile_cascade: profile cascade, only run to explain a photo without a frontal face.
        detect_max_side: longest side of the grey copy the cascade scans; larger images are downscaled.
        scale_factor: detectMultiScale pyramid step.
        min_neighbors: detectMultiScale overlap votes a detection needs.
        min_detect: smallest window (px of the downscaled copy) the cascade scans; 24 is its native size.
        min_face: faces narrower than this (original px) are `too_small` and never count as candidates.
        multiple_faces: "reject" any photo with two candidates, or keep the "largest" when it dominates.
        dominance: area(largest) / area(second) needed to keep the largest under the "largest" policy.
        blur_threshold: variance of the Laplacian of the face patch below which the face is `blurry`. On the
            348 faces-dev photos the sharpest faces score 120-6000; the only two below 60 (43, 50) are visibly
            blurred, and a Gaussian blur of sigma 3 % / 5 % of the face width drops 90 % / all faces below 60.
        blur_size: side of the grey face patch the blur is measured on, so the measure ignores face size.
        try_rotations: in-plane angles (degrees, counter-clockwise) tried when no face is found upright; the
            frame whose best detection has the highest cascade confidence wins.
    """

    cascade: str = "haarcascade_frontalface_default.xml"
    profile_cascade: str = "haarcascade_profileface.xml"
    detect_max_side: int = 640
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_detect: int = 24
    min_face: int = 40
    multiple_faces: str = "reject"
    dominance: float = 2.0
    blur_threshold: float = 60.0
    blur_size: int = 64
    try_rotations: tuple[float, ...] = (15.0, -15.0)

    def __post_init__(self) -> None:
        if self.multiple_faces not in MULTIPLE_FACES_POLICIES:
            raise ValueError(f"multiple_faces={self.multiple_faces!r}: use one of {MULTIPLE_FACES_POLICIES}")
        for name in ("detect_max_side", "min_detect", "min_face", "blur_size", "min_neighbors"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be a positive integer")
        if self.scale_factor <= 1.0:
            raise ValueError(f"scale_factor={self.scale_factor!r}: must be > 1")
        if self.dominance < 1.0:
            raise ValueError(f"dominance={self.dominance!r}: must be >= 1")


@dataclass(frozen=True)
class FaceDetection:
    """The face chosen in one photo, or why none was.

    Attributes:
        reason: "" when the face is usable, else a reject reason.
        box: chosen Haar box in the original image (for `frame_angle_deg` != 0, the box is upright in that
            rotated frame: its centre is mapped into the original and it is turned by the angle about it).
        frame_angle_deg: rotation (counter-clockwise, degrees) of the image in which the face was found.
        n_faces: frontal detections of any size in that frame.
        profile: the profile cascade fired where the frontal one found nothing.
        blur: variance of the Laplacian of the face patch (0.0 when there is no face).
    """

    reason: str
    box: Box | None
    frame_angle_deg: float
    n_faces: int
    profile: bool
    blur: float


@cache
def load_cascade(name: str) -> cv2.CascadeClassifier:
    """Loads a cascade once per process (file name in cv2.data.haarcascades or a path)."""
    path = Path(name) if Path(name).is_absolute() else Path(cv2.data.haarcascades) / name
    classifier = cv2.CascadeClassifier(str(path))
    if classifier.empty():
        raise FileNotFoundError(f"Haar cascade {name!r} not found or unreadable at {path}")
    return classifier


def _jpeg_is_complete(data: bytes) -> bool:
    """Walks the JPEG segments to the scan, then looks for EOI; an EXIF thumbnail's EOI is skipped over."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return True
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan: entropy data byte-stuffs 0xFF, so the next FF D9 is the real EOI
            return data.find(b"\xff\xd9", pos + 2 + length) >= 0
        pos += 2 + length
    return False


def decode_image(data: bytes) -> np.ndarray:
    """Decodes image bytes to RGB uint8 (H, W, 3), honouring EXIF orientation.

    Raises:
        ImageDecodeError: for empty, truncated (JPEG without EOI, PNG without IEND) or undecodable bytes.
    """
    if not data:
        raise ImageDecodeError("empty", "no bytes")
    # libjpeg fills a truncated scan with grey and only warns, so completeness is checked on the bytes.
    if data[:3] == b"\xff\xd8\xff" and not _jpeg_is_complete(data):
        raise ImageDecodeError("truncated", f"JPEG of {len(data)} bytes has no end-of-image marker")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-64:]:
        raise ImageDecodeError("truncated", f"PNG of {len(data)} bytes has no IEND chunk")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise ImageDecodeError("undecodable", f"OpenCV cannot decode these {len(data)} bytes")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """RGB (or already grey) uint8 to grey uint8."""
    return rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def detection_grey(grey: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Area-downscales so the longest side is at most `max_side`, then equalises; returns (image, scale)."""
    scale = min(1.0, max_side / max(grey.shape[:2]))
    if scale < 1.0:
        size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
        scale = size[0] / grey.shape[1]  # the realised scale after rounding to whole pixels
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return cv2.equalizeHist(grey), scale


def rotation_about_centre(shape: tuple[int, ...], angle_deg: float) -> tuple[np.ndarray, tuple[int, int]]:
    """Affine (2x3) rotating an image counter-clockwise onto a canvas that holds all of it; returns (M, size)."""
    h, w = shape[:2]
    rad = math.radians(angle_deg)
    cos, sin = abs(math.cos(rad)), abs(math.sin(rad))
    out_w, out_h = math.ceil(w * cos + h * sin), math.ceil(w * sin + h * cos)
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle_deg, 1.0)
    matrix[:, 2] += ((out_w - w) / 2, (out_h - h) / 2)
    return matrix, (out_w, out_h)


def _cascade_boxes(grey: np.ndarray, cascade: str, cfg: DetectConfig) -> list[tuple[Box, float]]:
    """(box, confidence) pairs, largest first; confidence is the last cascade stage's weight (higher = surer)."""
    found, _, weights = load_cascade(cascade).detectMultiScale3(
        grey,
        scaleFactor=cfg.scale_factor,
        minNeighbors=cfg.min_neighbors,
        minSize=(cfg.min_detect, cfg.min_detect),
        outputRejectLevels=True,
    )
    pairs = [(tuple(float(v) for v in b), float(w)) for b, w in zip(found, np.ravel(weights), strict=True)]
    # detectMultiScale works in parallel, so its order is not stable: sort largest first, then by position.
    return sorted(pairs, key=lambda p: (-p[0][2] * p[0][3], p[0][1], p[0][0]))


def detect_faces(rgb: np.ndarray, cfg: DetectConfig, angle_deg: float = 0.0) -> list[Box]:
    """Frontal faces found in the image (rotated by `angle_deg` first), largest first.

    Boxes are upright in the rotated frame; their centres are mapped back into the original image and their
    sizes are in original pixels, so for angle 0 they are plain original-image boxes.
    """
    small, scale = detection_grey(to_grey(rgb), cfg.detect_max_side)
    return [box for box, _ in _detect_small(small, scale, cfg, angle_deg)]


def _detect_small(small: np.ndarray, scale: float, cfg: DetectConfig, angle_deg: float) -> list[tuple[Box, float]]:
    if angle_deg == 0.0:
        return [((x / scale, y / scale, w / scale, h / scale), conf)
                for (x, y, w, h), conf in _cascade_boxes(small, cfg.cascade, cfg)]  # fmt: skip
    matrix, size = rotation_about_centre(small.shape, angle_deg)
    rotated = cv2.warpAffine(small, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inverse = cv2.invertAffineTransform(matrix)
    found = []
    for (x, y, w, h), conf in _cascade_boxes(rotated, cfg.cascade, cfg):
        # Box centre in pixel-centre coordinates, back through the rotation, then up to the original scale.
        cx, cy = inverse @ (x + w / 2 - 0.5, y + h / 2 - 0.5, 1.0)
        cx, cy, w, h = (cx + 0.5) / scale - 0.5, (cy + 0.5) / scale - 0.5, w / scale, h / scale
        found.append(((float(cx) + 0.5 - w / 2, float(cy) + 0.5 - h / 2, w, h), conf))
    return found


def _profile_fires(small: np.ndarray, cfg: DetectConfig) -> bool:
    # The profile cascade only knows one facing direction; the mirror image covers the other.
    return any(_cascade_boxes(img, cfg.profile_cascade, cfg) for img in (small, cv2.flip(small, 1)))


def face_frame_matrix(box: Box, angle_deg: float, out_size: int, margin: float = 0.0) -> np.ndarray:
    """3x3 map from a square patch (pixel-centre coords) to the original image for a face box in its frame.

    The patch covers the box grown by `margin` x its width on every side, upright in the rotated frame.
    """
    x, y, w, h = box
    cx, cy = x + w / 2 - 0.5, y + h / 2 - 0.5
    side = max(w, h) * (1 + 2 * margin)
    step = side / out_size
    rad = math.radians(angle_deg)
    # Undo the counter-clockwise frame rotation: patch axes turned clockwise by the angle in the original.
    cos, sin = math.cos(rad) * step, math.sin(rad) * step
    half = (out_size - 1) / 2
    return np.array([[cos, -sin, cx - cos * half + sin * half], [sin, cos, cy - sin * half - cos * half], [0, 0, 1]])


def area_prefilter(
    image: np.ndarray, out_to_src: np.ndarray, out_shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Crops and INTER_AREA-shrinks the region a shrinking warp reads; returns (image, adjusted 3x3 map).

    Bilinear sampling aliases once one output pixel steps over more than ~1.5 source pixels (a 12 MP face into
    a small patch); shrinking the covered region first keeps the result clean and the cost independent of the
    source size. Maps that do not shrink come back unchanged.
    """
    out_h, out_w = out_shape
    step = math.sqrt(abs(np.linalg.det(out_to_src[:2, :2])))
    if step <= 1.5:
        return image, out_to_src
    corners = out_to_src @ np.array([[0, out_w - 1, 0, out_w - 1], [0, 0, out_h - 1, out_h - 1], [1, 1, 1, 1]])
    x0, y0 = max(0, math.floor(corners[0].min()) - 2), max(0, math.floor(corners[1].min()) - 2)
    x1 = min(image.shape[1], math.ceil(corners[0].max()) + 3)
    y1 = min(image.shape[0], math.ceil(corners[1].max()) + 3)
    if x1 <= x0 or y1 <= y0:  # the patch lies wholly outside the image: border handling does the rest
        return image, out_to_src
    crop = image[y0:y1, x0:x1]
    size = (max(1, round(crop.shape[1] / step)), max(1, round(crop.shape[0] / step)))
    fx, fy = size[0] / crop.shape[1], size[1] / crop.shape[0]
    # source pixel-centre coordinates -> pixel-centre coordinates of the shrunk crop
    to_small = np.array([[fx, 0, (0.5 - x0) * fx - 0.5], [0, fy, (0.5 - y0) * fy - 0.5], [0, 0, 1]])
    return cv2.resize(crop, size, interpolation=cv2.INTER_AREA), to_small @ out_to_src


def sample_patch(image: np.ndarray, out_to_src: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Bilinear sample of `image` through a 3x3 output->source affine (area-filtered when it shrinks)."""
    image, out_to_src = area_prefilter(image, out_to_src, out_shape)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(image, out_to_src[:2], out_shape[::-1], flags=flags, borderMode=cv2.BORDER_REPLICATE)


def blur_score(grey: np.ndarray, box: Box, angle_deg: float, size: int) -> float:
    """Variance of the Laplacian on the face box resampled to size x size, so it compares faces of any size."""
    patch = sample_patch(grey, face_frame_matrix(box, angle_deg, size), (size, size))
    return float(cv2.Laplacian(patch, cv2.CV_64F).var())


def find_face(rgb: np.ndarray, cfg: DetectConfig, grey: np.ndarray | None = None) -> FaceDetection:
    """Detects, applies the reject policy and measures blur; never raises for image content.

    Args:
        rgb: RGB (or grey) uint8 image.
        cfg: detection settings.
        grey: the grey copy of `rgb` when the caller already has one.
    """
    grey = to_grey(rgb) if grey is None else grey
    small, scale = detection_grey(grey, cfg.detect_max_side)
    angle, found = 0.0, _detect_small(small, scale, cfg, 0.0)
    if not found and cfg.try_rotations:
        # A +15 degree face is often also "found" at -15 as a weak false positive: the surest frame wins.
        frames = [(angle, _detect_small(small, scale, cfg, angle)) for angle in cfg.try_rotations]
        angle, found = max(frames, key=lambda f: max((conf for _, conf in f[1]), default=-math.inf))
    boxes = [box for box, _ in found]
    if not boxes:
        profile = _profile_fires(small, cfg)
        return FaceDetection("profile" if profile else "no_face", None, 0.0, 0, profile, 0.0)
    # Faces below min_face never become the output, so they neither count as rivals nor get chosen.
    candidates = [b for b in boxes if b[2] >= cfg.min_face]
    if not candidates:
        return FaceDetection("too_small", boxes[0], angle, len(boxes), False, 0.0)
    box, reason = candidates[0], ""
    if len(candidates) > 1:
        ratio = (candidates[0][2] * candidates[0][3]) / (candidates[1][2] * candidates[1][3])
        if cfg.multiple_faces == "reject" or ratio < cfg.dominance:
            reason = "multiple_faces"
    blur = blur_score(grey, box, angle, cfg.blur_size)
    if not reason and blur < cfg.blur_threshold:
        reason = "blurry"
    return FaceDetection(reason, box, angle, len(boxes), False, blur)
