"""Eye/nose/mouth landmarks inside a Haar face box and the similarity warp onto a fixed 152x152 eye template."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from skimage.transform import SimilarityTransform, warp

from pipeline.faces.detect import (
    Box,
    DetectConfig,
    ImageDecodeError,
    Point,
    area_prefilter,
    decode_image,
    face_frame_matrix,
    find_face,
    load_cascade,
    sample_patch,
    to_grey,
)

EYE_METHODS = ("haar", "geometry", "blend")
# Nose tip and mouth centre below the eye midpoint, in inter-ocular distances, from the widely used 5-point
# ArcFace 112x112 reference (eyes at y 51.6, nose 71.7, mouth corners 92.3; IOD 35.2). No OpenCV nose cascade
# exists, so the nose always comes from this geometry.
NOSE_BELOW_EYES = 0.57
MOUTH_BELOW_EYES = 1.15


@dataclass(frozen=True)
class AlignConfig:
    """Landmark and warp settings. Positions in the output are fractions of `size` (x, y).

    Attributes:
        size: output side in pixels.
        left_eye / right_eye: template positions of the image-left / image-right eye in the output.
        detect: face detection and reject policy.
        eye_method: "haar" (eye cascades, geometry for an eye they miss), "geometry" (box only) or "blend"
            (mean of the two per eye).
        eyes_required: reject `no_eyes` when the cascades miss either eye instead of falling back to geometry.
        eye_cascades: tried in order per eye; the first with a candidate near the expected spot wins.
        eye_patch: side of the upright face patch the eye and smile cascades scan.
        eye_band: rows of the face box (fractions) searched for eyes, split into image-left/right halves.
        eye_scale_factor / eye_min_neighbors / eye_min_size: cascade settings for the eye search (min in box
            fractions).
        eye_max_offset: candidates farther than this (box widths) from the geometric eye are ignored.
        geometry_left_eye / geometry_right_eye: eye centres as fractions of the Haar box, measured on LFW.
        eye_rotations: extra in-plane angles (degrees) the eye search tries, in order, when the detection frame
            does not give both eyes: the face cascade tolerates more roll than the eye cascades do.
        eye_spacing: plausible inter-ocular distance in box widths (dev photos: 0.37 +- 0.04); outside it, the
            eye farther from its geometric spot is dropped.
        smile_cascade: cascade for the mouth ("" to always use geometry).
        smile_min_neighbors: the smile cascade fires on any dark line, so it needs many votes.
        border: skimage warp mode for output pixels outside the photo.
    """

    size: int = 152
    left_eye: tuple[float, float] = (0.35, 0.35)
    right_eye: tuple[float, float] = (0.65, 0.35)
    detect: DetectConfig = field(default_factory=DetectConfig)
    eye_method: str = "haar"
    eyes_required: bool = False
    eye_cascades: tuple[str, ...] = ("haarcascade_eye_tree_eyeglasses.xml", "haarcascade_eye.xml")
    eye_patch: int = 150
    eye_band: tuple[float, float] = (0.15, 0.6)
    eye_scale_factor: float = 1.05
    eye_min_neighbors: int = 3
    eye_min_size: float = 0.1
    eye_max_offset: float = 0.15
    geometry_left_eye: tuple[float, float] = (0.32, 0.39)
    geometry_right_eye: tuple[float, float] = (0.68, 0.39)
    eye_rotations: tuple[float, ...] = (15.0, -15.0)
    eye_spacing: tuple[float, float] = (0.27, 0.5)
    smile_cascade: str = "haarcascade_smile.xml"
    smile_min_neighbors: int = 25
    border: str = "edge"

    def __post_init__(self) -> None:
        if self.eye_method not in EYE_METHODS:
            raise ValueError(f"eye_method={self.eye_method!r}: use one of {EYE_METHODS}")
        if self.eyes_required and self.eye_method == "geometry":
            raise ValueError("eyes_required=True needs eye_method 'haar' or 'blend': geometry never misses an eye")
        if self.size < 8:
            raise ValueError(f"size={self.size!r}: must be at least 8 pixels")
        if not self.left_eye[0] < self.right_eye[0]:
            raise ValueError(f"left_eye={self.left_eye} must lie left of right_eye={self.right_eye} (smaller x)")
        if not 0.0 <= self.eye_band[0] < self.eye_band[1] <= 1.0:
            raise ValueError(f"eye_band={self.eye_band}: need 0 <= top < bottom <= 1")
        if self.border not in ("edge", "constant", "symmetric", "reflect", "wrap"):
            raise ValueError(f"border={self.border!r}: use a skimage warp mode such as 'edge' or 'constant'")


@dataclass(frozen=True)
class AlignResult:
    """One photo through detect -> landmarks -> warp. Points are (x, y) in original-image pixels.

    `left_eye` is the image-left eye (the subject's right eye). `angle_deg` is the roll of the eye line in the
    photo (positive = image-right eye lower) that the warp removed; `scale` is output pixels per photo pixel.
    """

    status: str
    reason: str
    box: Box | None = None
    left_eye: Point | None = None
    right_eye: Point | None = None
    nose: Point | None = None
    mouth: Point | None = None
    eye_method: str = ""
    nose_method: str = ""
    mouth_method: str = ""
    angle_deg: float = 0.0
    scale: float = 0.0
    image: np.ndarray | None = field(default=None, repr=False, compare=False)
    n_faces: int = 0
    blur: float = 0.0
    frame_angle_deg: float = 0.0
    profile: bool = False
    width: int = 0
    height: int = 0
    detail: str = ""

    def record(self) -> dict[str, object]:
        """Flat manifest columns (everything but the image); missing points become NaN."""
        row: dict[str, object] = {"status": self.status, "reason": self.reason, "detail": self.detail}
        box = (math.nan,) * 4 if self.box is None else self.box
        row.update(dict(zip(("box_x", "box_y", "box_w", "box_h"), box, strict=True)))
        for key, point in (("left_eye", self.left_eye), ("right_eye", self.right_eye), ("nose", self.nose),
                           ("mouth", self.mouth)):  # fmt: skip
            row[f"{key}_x"], row[f"{key}_y"] = (math.nan, math.nan) if point is None else point
        for name in ("eye_method", "nose_method", "mouth_method", "angle_deg", "scale", "n_faces", "blur",
                     "frame_angle_deg", "profile", "width", "height"):  # fmt: skip
            row[name] = getattr(self, name)
        return row


def _to_original(matrix: np.ndarray, x: float, y: float) -> Point:
    px, py, _ = matrix @ (x, y, 1.0)
    return (float(px), float(py))


def geometric_eyes(box: Box, frame_angle_deg: float, cfg: AlignConfig) -> tuple[Point, Point]:
    """Eye centres at fixed fractions of the face box (upright in its detection frame)."""
    matrix = face_frame_matrix(box, frame_angle_deg, 1)
    # A 1-pixel patch spans the box; patch coords are (fraction - 0.5) in pixel-centre terms.
    return tuple(_to_original(matrix, fx - 0.5, fy - 0.5) for fx, fy in (cfg.geometry_left_eye, cfg.geometry_right_eye))


def haar_eyes(grey: np.ndarray, box: Box, frame_angle_deg: float, cfg: AlignConfig) -> tuple[Point | None, ...]:
    """Eye centres from the eye cascades, one per half of the upper face; None where no cascade finds one.

    The face is resampled to a fixed patch first: the eye cascades' 20 px window needs small faces enlarged,
    and a 12 MP face shrunk to the same patch costs what a thumbnail does.
    """
    side = cfg.eye_patch
    matrix = face_frame_matrix(box, frame_angle_deg, side)
    patch = sample_patch(grey, matrix, (side, side))
    top, bottom = round(cfg.eye_band[0] * side), round(cfg.eye_band[1] * side)
    min_size = max(1, round(cfg.eye_min_size * side))
    eyes: list[Point | None] = []
    for half, (gx, gy) in enumerate((cfg.geometry_left_eye, cfg.geometry_right_eye)):
        x0 = 0 if half == 0 else side // 2
        region = patch[top:bottom, x0 : x0 + side // 2]
        expected = np.array((gx * side - 0.5, gy * side - 0.5))
        best = None
        for cascade in cfg.eye_cascades:
            found = load_cascade(cascade).detectMultiScale(
                region, scaleFactor=cfg.eye_scale_factor, minNeighbors=cfg.eye_min_neighbors, minSize=(min_size,) * 2
            )
            centres = [np.array((x0 + x + w / 2 - 0.5, top + y + h / 2 - 0.5)) for x, y, w, h in found]
            # Eyebrows and nostrils also fire, so the candidate nearest the expected eye wins, within a radius.
            near = [c for c in centres if np.linalg.norm(c - expected) <= cfg.eye_max_offset * side]
            if near:
                best = min(near, key=lambda c: (float(np.linalg.norm(c - expected)), c[0], c[1]))
                break
        eyes.append(None if best is None else _to_original(matrix, *best))
    return tuple(eyes)


def plausible_pair(eyes: tuple[Point | None, ...], box: Box, cfg: AlignConfig) -> tuple[Point | None, ...]:
    """Drops the less likely eye of a pair whose spacing is implausible for the box (both on one eye, say)."""
    left, right = eyes
    if left is None or right is None:
        return eyes
    low, high = cfg.eye_spacing
    if low * box[2] <= math.dist(left, right) <= high * box[2]:
        return eyes
    geometric = geometric_eyes(box, 0.0, cfg)  # the frame angle hardly moves the prior at these distances
    keep_left = math.dist(left, geometric[0]) <= math.dist(right, geometric[1])
    return (left, None) if keep_left else (None, right)


def search_eyes(grey: np.ndarray, box: Box, frame_angle_deg: float, cfg: AlignConfig) -> tuple[Point | None, ...]:
    """`haar_eyes` in the detection frame, then in frames turned by `cfg.eye_rotations` until both are found."""
    eyes = plausible_pair(haar_eyes(grey, box, frame_angle_deg, cfg), box, cfg)
    for extra in cfg.eye_rotations if None in eyes else ():
        turned = plausible_pair(haar_eyes(grey, box, frame_angle_deg + extra, cfg), box, cfg)
        if None not in turned:  # a turned frame only replaces the first search when it finds both eyes
            return turned
    return eyes


def combine_eyes(
    haar: tuple[Point | None, Point | None], geometric: tuple[Point, Point], method: str
) -> tuple[Point, Point, str]:
    """Final eyes for `method` and the label of what produced them ("haar_eye", "haar_eye+geometry", ...)."""
    if method == "geometry":
        return geometric[0], geometric[1], "geometry"
    label = "haar_eye" if method == "haar" else "blend"
    eyes = []
    for found, prior in zip(haar, geometric, strict=True):
        if found is None:
            eyes.append(prior)
        elif method == "blend":
            eyes.append(((found[0] + prior[0]) / 2, (found[1] + prior[1]) / 2))
        else:
            eyes.append(found)
    n_found = sum(e is not None for e in haar)
    if n_found == 0:
        return eyes[0], eyes[1], "geometry"
    return eyes[0], eyes[1], label if n_found == 2 else f"{label}+geometry"


def below_eyes(left: Point, right: Point, distance: float) -> Point:
    """The point `distance` inter-ocular distances below the eye midpoint, perpendicular to the eye line."""
    mx, my = (left[0] + right[0]) / 2, (left[1] + right[1]) / 2
    dx, dy = right[0] - left[0], right[1] - left[1]
    return (mx - dy * distance, my + dx * distance)


def find_mouth(
    grey: np.ndarray, box: Box, frame_angle_deg: float, left: Point, right: Point, cfg: AlignConfig
) -> tuple[Point, str]:
    """(mouth centre, method): the smile cascade when it fires near the geometric mouth, else geometry."""
    prior = below_eyes(left, right, MOUTH_BELOW_EYES)
    if not cfg.smile_cascade:
        return prior, "geometry"
    side = cfg.eye_patch
    matrix = face_frame_matrix(box, frame_angle_deg, side)
    patch = sample_patch(grey, matrix, (side, side))
    top = side // 2
    found = load_cascade(cfg.smile_cascade).detectMultiScale(
        patch[top:], scaleFactor=1.1, minNeighbors=cfg.smile_min_neighbors, minSize=(side // 5, side // 10)
    )
    iod = math.dist(left, right)
    candidates = [_to_original(matrix, x + w / 2 - 0.5, top + y + h / 2 - 0.5) for x, y, w, h in found]
    # The smile cascade is noisy: only a box within half an eye distance of the expected mouth is believed.
    near = sorted((math.dist(c, prior), c) for c in candidates if math.dist(c, prior) <= 0.5 * iod)
    return (near[0][1], "haar_smile") if near else (prior, "geometry")


def _template(cfg: AlignConfig) -> np.ndarray:
    # A fraction f of the side is the continuous position f * size; pixel centres sit at i + 0.5 there.
    return np.array([cfg.left_eye, cfg.right_eye], dtype=np.float64) * cfg.size - 0.5


def align_to_landmarks(
    rgb: np.ndarray, left_eye: Point, right_eye: Point, cfg: AlignConfig
) -> tuple[np.ndarray, float, float]:
    """Warps so the two eyes land on the template; returns (size x size x 3 uint8 RGB, angle_deg, scale).

    Raises:
        ValueError: when the two eyes coincide.
    """
    if math.dist(left_eye, right_eye) < 1e-6:
        raise ValueError(f"left_eye={left_eye} and right_eye={right_eye} coincide: no similarity fits")
    src = np.array([left_eye, right_eye], dtype=np.float64)
    tform = SimilarityTransform.from_estimate(src, _template(cfg))
    if not tform:
        raise ValueError(f"no similarity maps eyes {left_eye}, {right_eye} onto the template: {tform}")
    image = np.ascontiguousarray(rgb[:, :, :3]) if rgb.ndim == 3 else np.repeat(rgb[:, :, None], 3, axis=2)
    shape = (cfg.size, cfg.size)
    # A shrinking warp is area-filtered first, so a 12 MP face does not alias into the 152 px crop.
    image, out_to_src = area_prefilter(image, np.linalg.inv(tform.params), shape)
    out = warp(image, out_to_src, output_shape=shape, order=1, mode=cfg.border, preserve_range=True)
    angle = math.degrees(math.atan2(right_eye[1] - left_eye[1], right_eye[0] - left_eye[0]))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), angle, float(tform.scale)


def align_face(rgb: np.ndarray, cfg: AlignConfig) -> AlignResult:
    """Detects the face, finds its landmarks and warps it; image content never makes this raise.

    Args:
        rgb: uint8 image, (H, W, 3) RGB, (H, W, 4) RGBA (alpha ignored) or (H, W) grey.
        cfg: alignment settings.

    Raises:
        ValueError: for a non-uint8 array or one of another shape (a caller bug, not bad pixels).
    """
    if rgb.dtype != np.uint8 or not (rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[2] in (3, 4))):
        raise ValueError(f"expected a uint8 (H, W), (H, W, 3) or (H, W, 4) image, got {rgb.dtype} {rgb.shape}")
    rgb = np.ascontiguousarray(rgb if rgb.ndim == 2 else rgb[:, :, :3])  # OpenCV refuses negative strides
    height, width = rgb.shape[:2]
    grey = to_grey(rgb)
    det = find_face(rgb, cfg.detect, grey)
    common = {"n_faces": det.n_faces, "blur": det.blur, "frame_angle_deg": det.frame_angle_deg,
              "profile": det.profile, "width": width, "height": height, "box": det.box}  # fmt: skip
    if det.reason:
        return AlignResult("rejected", det.reason, **common)
    assert det.box is not None  # a detection without a reason always has a box
    geometric = geometric_eyes(det.box, det.frame_angle_deg, cfg)
    haar = (None, None) if cfg.eye_method == "geometry" else search_eyes(grey, det.box, det.frame_angle_deg, cfg)
    if cfg.eyes_required and None in haar:
        return AlignResult("rejected", "no_eyes", left_eye=haar[0], right_eye=haar[1], **common)
    left, right, eye_method = combine_eyes(haar, geometric, cfg.eye_method)
    mouth, mouth_method = find_mouth(grey, det.box, det.frame_angle_deg, left, right, cfg)
    image, angle, scale = align_to_landmarks(rgb, left, right, cfg)
    return AlignResult(
        "ok", "", left_eye=left, right_eye=right, nose=below_eyes(left, right, NOSE_BELOW_EYES), mouth=mouth,
        eye_method=eye_method, nose_method="geometry", mouth_method=mouth_method, angle_deg=angle, scale=scale,
        image=image, **common,
    )  # fmt: skip


def align_bytes(data: bytes, cfg: AlignConfig) -> AlignResult:
    """Decodes and aligns; corrupt, truncated or empty bytes become a `decode_error` reject."""
    try:
        rgb = decode_image(data)
    except ImageDecodeError as err:
        return AlignResult("rejected", "decode_error", detail=str(err))
    return align_face(rgb, cfg)
