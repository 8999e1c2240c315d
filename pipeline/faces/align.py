"""One photo to an aligned crop: verified Haar face, the reject policy, eye landmarks, a similarity warp."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pipeline.core.params import AlignParams
from pipeline.faces.detect import (
    Box,
    ImageDecodeError,
    Point,
    Scan,
    blur_score,
    centre_inside,
    confirm_votes,
    decode_image,
    make_scan,
    profile_fires,
    sample_patch,
    scan_frame,
    scan_top_down,
    size_order,
    skin_share,
    to_grey,
)
from pipeline.faces.eyes import Eyes, geometric_eyes, search_eyes

# Every reason a photo can be rejected for, in the order the checks run.
REJECT_REASONS = ("decode_error", "no_face", "profile", "not_a_face", "multiple_faces", "blurry", "no_eyes")
EYE_METHODS = ("haar", "geometry", "blend")
# Nose tip and mouth centre below the eye midpoint, in inter-ocular distances, from the widely used 5-point
# ArcFace 112x112 reference (eyes at y 51.6, nose 71.7, mouth corners 92.3; IOD 35.2). No OpenCV nose cascade
# exists; the smile cascade was dropped for the mouth: it cost 4 ms a photo (5 % of align), fired on any dark
# line, and its answer never changed the crop, which only the eyes place.
NOSE_BELOW_EYES = 0.57
MOUTH_BELOW_EYES = 1.15
# Verification's skin cue: share of skin pixels below the eyes. Measured on Haar boxes with enough alt2 votes:
# 0.4 lets through 6 of 57 boxes on drawn distractors in the faces-dev composites, and keeps every face that the
# eye check missed on faces-dev but 3 (with the eye check alone, 14 of Elton John's sunglasses were lost).
SKIN_SHARE = 0.4


@dataclass(frozen=True)
class Candidate:
    """One frontal Haar box and the second opinion on it.

    Attributes:
        box: box in the original image (upright in the frame of its detection angle).
        confidence: the frontal cascade's last-stage weight (higher = surer).
        votes: windows of the second cascade that agree (`confirm_votes`); -1 when verification is off.
        eyes: the eye cascades' image-left / image-right eye when verification searched them, else None.
        face: both checks passed (always True when verification is off).
    """

    box: Box
    confidence: float
    votes: int
    eyes: Eyes | None
    face: bool


@dataclass(frozen=True)
class FaceDetection:
    """The face chosen in one photo, or why none was.

    Attributes:
        reason: "" when the face is usable, else a reject reason.
        box: chosen box in the original image (for `frame_angle_deg` != 0, the box is upright in that rotated
            frame: its centre is mapped into the original and it is turned by the angle about it).
        frame_angle_deg: rotation (counter-clockwise, degrees) of the image in which the face was found.
        n_faces: verified faces in that frame.
        n_not_faces: Haar boxes in that frame that verification turned down.
        profile: the profile cascade fired where the frontal one found nothing.
        blur: variance of the Laplacian of the face patch (0.0 when there is no face).
        votes: the chosen box's second-cascade votes (-1 when verification is off or there is no box).
        eyes: the eye cascades' eyes of the chosen box, when verification searched them.
    """

    reason: str
    box: Box | None
    frame_angle_deg: float = 0.0
    n_faces: int = 0
    n_not_faces: int = 0
    profile: bool = False
    blur: float = 0.0
    votes: int = -1
    eyes: Eyes | None = None


def check_box(
    rgb: np.ndarray, grey: np.ndarray, box: Box, confidence: float, angle_deg: float, params: AlignParams
) -> Candidate:
    """The second opinion on one Haar box: enough alt2 votes, and then skin on the cheeks or an eye in its place.

    The cues fail on different things. Drawn logos with two dots over a bar collect as many alt2 votes as a face,
    but have no eye and rarely skin; rackets, grass and noise get an eye now and then but few votes; a face behind
    sunglasses has no eye for the cascades but skin below them. Cheap checks run first; the eyes found are the ones
    alignment then uses.
    """
    if not params.verify:
        return Candidate(box, confidence, -1, None, True)
    votes = confirm_votes(grey, box, angle_deg)
    if votes < params.verify_votes:
        return Candidate(box, confidence, votes, None, False)
    if skin_share(rgb, box, angle_deg) >= SKIN_SHARE:
        return Candidate(box, confidence, votes, None, True)
    eyes = search_eyes(grey, box, angle_deg)
    return Candidate(box, confidence, votes, eyes, eyes != (None, None))


def frame_candidates(
    rgb: np.ndarray, grey: np.ndarray, scan: Scan, angle_deg: float, params: AlignParams
) -> list[Candidate]:
    """Every frontal box of one frame, largest first, with its verdict."""
    return [check_box(rgb, grey, box, conf, angle_deg, params) for box, conf in scan_frame(scan, angle_deg)]


def policy_candidates(
    rgb: np.ndarray, grey: np.ndarray, scan: Scan, angle_deg: float, params: AlignParams, beside: float = 0.0
) -> list[Candidate]:
    """One frame's candidates, largest first, as far as the reject policy needs them.

    With `multiple_faces: largest`, a face under 1/dominance of the largest verified face's area cannot change the
    choice, so the frame is scanned from the largest windows down and the scan stops where only such faces remain
    (`scan_top_down`). `reject` counts every face, so it scans the whole frame.

    `beside` is the width of a verified face another frame of the photo already holds: this frame's faces under
    1/dominance of its area cannot change the choice either.
    """
    if params.multiple_faces != "largest" or scan.coarse_scale_factor is None:
        return frame_candidates(rgb, grey, scan, angle_deg, params)
    found: list[Candidate] = []

    def judge(boxes: list[tuple[Box, float]]) -> float:
        found.extend(check_box(rgb, grey, box, conf, angle_deg, params) for box, conf in boxes)
        widest = max((c.box[2] for c in found if c.face), default=0.0)
        return widest / math.sqrt(params.dominance)  # Haar boxes are square: area ratio = width ratio squared

    scan_top_down(scan, angle_deg, judge, beside / math.sqrt(params.dominance))
    return sorted(found, key=lambda c: size_order(c.box))


def distinct_faces(candidates: list[Candidate]) -> list[Candidate]:
    """The verified faces of one frame, one box per face, largest first.

    The cascade sometimes puts two boxes on one face that overlap too little to be grouped (IoU < 0.5): one on the
    face, one shifted down or sideways. Two faces are never that close, so where one box's centre lies inside
    another, they are one face, and the box the second cascade agrees with most (then the surer one) stands for it.
    Counted as two faces, they cost the photo `multiple_faces` (every such reject of faces-dev as it is: 4 photos).
    """
    kept: list[Candidate] = []
    for cand in sorted((c for c in candidates if c.face), key=lambda c: (c.votes, c.confidence), reverse=True):
        if not any(centre_inside(cand.box, k.box) or centre_inside(k.box, cand.box) for k in kept):
            kept.append(cand)
    return sorted(kept, key=lambda c: size_order(c.box))


def face_boxes(rgb: np.ndarray, params: AlignParams) -> list[Box]:
    """Every verified frontal face of the upright frame, largest first, from the first contrast step that finds one:
    the boxes the reject policy chooses from."""
    grey = to_grey(rgb)
    for equalize in params.equalize:
        faces = distinct_faces(frame_candidates(rgb, grey, make_scan(grey, params, equalize), 0.0, params))
        if faces:
            break
    return [c.box for c in faces]


def _surest(candidates: list[Candidate]) -> float:
    return max((c.confidence for c in candidates if c.face), default=-math.inf)


def find_face(rgb: np.ndarray, params: AlignParams, grey: np.ndarray | None = None) -> FaceDetection:
    """Scans, verifies, applies the reject policy and measures blur; never raises for image content.

    Each contrast step of `params.equalize` gets the whole search in turn (`search_scan`) until one finds a verified
    face; when none does, the first step's verdict (`no_face`, `profile` or `not_a_face`) stands.
    """
    grey = to_grey(rgb) if grey is None else grey
    first: FaceDetection | None = None
    for equalize in params.equalize:
        found = search_scan(rgb, grey, make_scan(grey, params, equalize), params, explain=first is None)
        if found.n_faces:
            return found
        first = first or found
    assert first is not None  # AlignParams requires at least one contrast step
    return first


def search_scan(
    rgb: np.ndarray, grey: np.ndarray, scan: Scan, params: AlignParams, explain: bool = True
) -> FaceDetection:
    """One contrast step's search: the upright frame, then the rotated ones when it has no verified face.

    A +15 degree face is often also "found" at -15 as a weak false positive, so the frame whose surest verified face
    is surest wins. `explain`: run the profile cascade to tell `profile` from `no_face` when nothing fired (a later
    contrast step's verdict is never reported, so it skips that scan).
    """
    frames = [(0.0, policy_candidates(rgb, grey, scan, 0.0, params))]
    if not any(c.face for c in frames[0][1]):
        for angle in params.try_rotations:
            widest = max((c.box[2] for _, found in frames for c in found if c.face), default=0.0)
            frames.append((angle, policy_candidates(rgb, grey, scan, angle, params, widest)))
    angle, found = max(frames, key=lambda f: _surest(f[1]))  # max keeps the first (upright) frame on ties
    faces = distinct_faces(found)
    if not faces:
        angle, found = max(frames, key=lambda f: len(f[1]))
        if found:  # Haar fired, verification turned every box down
            best = max(found, key=lambda c: c.confidence)
            return FaceDetection("not_a_face", best.box, angle, 0, len(found), votes=best.votes)
        profile = explain and profile_fires(scan)
        return FaceDetection("profile" if profile else "no_face", None, profile=profile)
    chosen, reason = faces[0], ""
    if len(faces) > 1:
        ratio = (faces[0].box[2] * faces[0].box[3]) / (faces[1].box[2] * faces[1].box[3])
        if params.multiple_faces == "reject" or ratio < params.dominance:
            reason = "multiple_faces"
    blur = blur_score(grey, chosen.box, angle)
    if not reason and blur < params.blur_threshold:
        reason = "blurry"
    n_not_faces = sum(not c.face for c in found)
    return FaceDetection(
        reason, chosen.box, angle, len(faces), n_not_faces, False, blur, chosen.votes, chosen.eyes,
    )  # fmt: skip


@dataclass(frozen=True)
class AlignResult:
    """One photo through detect -> verify -> landmarks -> warp. Points are (x, y) in original-image pixels.

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
    n_not_faces: int = 0
    votes: int = -1
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
        for name in ("eye_method", "nose_method", "mouth_method", "angle_deg", "scale", "n_faces", "n_not_faces",
                     "votes", "blur", "frame_angle_deg", "profile", "width", "height"):  # fmt: skip
            row[name] = getattr(self, name)
        return row


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


def _template(params: AlignParams) -> np.ndarray:
    # A fraction f of the side is the continuous position f * size; pixel centres sit at i + 0.5 there.
    return np.array([params.left_eye, params.right_eye], dtype=np.float64) * params.size - 0.5


def eye_similarity(left_eye: Point, right_eye: Point, params: AlignParams) -> np.ndarray:
    """The 3x3 similarity (rotation, uniform scale, shift) that puts the two eyes on the template exactly.

    Two point pairs fix a similarity: as complex numbers, template = a * eye + b.
    """
    (lx, ly), (rx, ry) = _template(params)
    a = complex(rx - lx, ry - ly) / complex(right_eye[0] - left_eye[0], right_eye[1] - left_eye[1])
    b = complex(lx, ly) - a * complex(*left_eye)
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag], [0.0, 0.0, 1.0]])


def align_to_landmarks(
    rgb: np.ndarray, left_eye: Point, right_eye: Point, params: AlignParams
) -> tuple[np.ndarray, float, float]:
    """Warps so the two eyes land on the template; returns (size x size x 3 uint8 RGB, angle_deg, scale).

    Bilinear, with the photo's edge pixels repeated outside it; a shrinking warp is area-filtered first, so a 12 MP
    face does not alias into the 152 px crop (`sample_patch`).

    Raises:
        ValueError: when the two eyes coincide.
    """
    if math.dist(left_eye, right_eye) < 1e-6:
        raise ValueError(f"left_eye={left_eye} and right_eye={right_eye} coincide: no similarity fits")
    image = np.ascontiguousarray(rgb[:, :, :3]) if rgb.ndim == 3 else np.repeat(rgb[:, :, None], 3, axis=2)
    to_crop = eye_similarity(left_eye, right_eye, params)
    crop = sample_patch(image, np.linalg.inv(to_crop), (params.size, params.size))
    angle = math.degrees(math.atan2(right_eye[1] - left_eye[1], right_eye[0] - left_eye[0]))
    return crop, angle, float(math.hypot(to_crop[0, 0], to_crop[1, 0]))


def align_face(rgb: np.ndarray, params: AlignParams) -> AlignResult:
    """Detects and verifies the face, finds its landmarks and warps it; image content never makes this raise.

    Args:
        rgb: uint8 image, (H, W, 3) RGB, (H, W, 4) RGBA (alpha ignored) or (H, W) grey.
        params: the `align` params section.

    Raises:
        ValueError: for a non-uint8 array or one of another shape (a caller bug, not bad pixels).
    """
    if rgb.dtype != np.uint8 or not (rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[2] in (3, 4))):
        raise ValueError(f"expected a uint8 (H, W), (H, W, 3) or (H, W, 4) image, got {rgb.dtype} {rgb.shape}")
    rgb = np.ascontiguousarray(rgb if rgb.ndim == 2 else rgb[:, :, :3])  # OpenCV refuses negative strides
    height, width = rgb.shape[:2]
    grey = to_grey(rgb)
    det = find_face(rgb, params, grey)
    common = {"n_faces": det.n_faces, "n_not_faces": det.n_not_faces, "votes": det.votes, "blur": det.blur,
              "frame_angle_deg": det.frame_angle_deg, "profile": det.profile, "width": width, "height": height,
              "box": det.box}  # fmt: skip
    if det.reason:
        return AlignResult("rejected", det.reason, **common)
    assert det.box is not None  # a detection without a reason always has a box
    geometric = geometric_eyes(det.box, det.frame_angle_deg)
    haar = det.eyes
    if haar is None:
        haar = (None, None) if params.eye_method == "geometry" else search_eyes(grey, det.box, det.frame_angle_deg)
    if params.eyes_required and None in haar:
        return AlignResult("rejected", "no_eyes", left_eye=haar[0], right_eye=haar[1], **common)
    left, right, eye_method = combine_eyes(haar, geometric, params.eye_method)
    image, angle, scale = align_to_landmarks(rgb, left, right, params)
    return AlignResult(
        "ok", "", left_eye=left, right_eye=right, nose=below_eyes(left, right, NOSE_BELOW_EYES),
        mouth=below_eyes(left, right, MOUTH_BELOW_EYES), eye_method=eye_method, nose_method="geometry",
        mouth_method="geometry", angle_deg=angle, scale=scale,
        image=image, **common,
    )  # fmt: skip


def align_bytes(data: bytes, params: AlignParams) -> AlignResult:
    """Decodes and aligns one photo: the stable entry point for callers outside the stage (e.g. `i2c lookalike`).

    Corrupt, truncated or empty bytes become a `decode_error` reject; every other outcome is an `AlignResult`
    whose `image` is the size x size RGB crop when `status` is "ok" and whose `reason` says why not otherwise.
    """
    try:
        rgb = decode_image(data)
    except ImageDecodeError as err:
        return AlignResult("rejected", "decode_error", detail=str(err))
    return align_face(rgb, params)
