"""Decoding, Haar-cascade face scans on a downscaled grey copy, the second cascade's vote, face patches and blur."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from pipeline.core.params import AlignParams

Box = tuple[float, float, float, float]  # (x, y, w, h), x/y = top-left corner, original-image pixels
Point = tuple[float, float]  # (x, y) in pixel-centre coordinates: the centre of pixel (0, 0) is (0.0, 0.0)

FRONTAL_CASCADE = "haarcascade_frontalface_default.xml"
# The second opinion: another frontal cascade, trained with another feature set (Lienhart's "alt2"), scanned on the
# box alone. Its windows pile up on a real face and rarely on the textures, logos and hands the first one fires on.
CONFIRM_CASCADE = "haarcascade_frontalface_alt2.xml"
CONFIRM_PATCH = 64  # side of the patch (box grown by CONFIRM_MARGIN on each side) the second cascade scans
CONFIRM_MARGIN = 0.25
PROFILE_CASCADE = "haarcascade_profileface.xml"  # only run to explain a photo without a frontal face
# The profile scan only picks a reject's label (`profile` or `no_face`), so a coarse pyramid will do, and it looks for
# heads at least PROFILE_MIN_FACE x the smallest frontal face: the small windows are most of a scan's cost (67 -> 16
# ms on a no-face photo), and every profile label of faces-dev and faces-landmarks (3 photos) is kept.
PROFILE_SCALE_FACTOR = 1.2
PROFILE_MIN_FACE = 2.0
MIN_NEIGHBORS = 5  # detectMultiScale overlap votes a detection needs
WINDOW = 24  # the frontal cascade's native window (px of the downscaled copy)
GROUP_EPS = 0.2  # the rectangle similarity detectMultiScale groups its windows with
# Skin in YCrCb (Chai & Ngan 1999): holds for light and dark skin alike, and never for grey pixels (Cr = Cb = 128).
SKIN_CR = (133, 173)
SKIN_CB = (77, 127)
BLUR_SIZE = 64  # side of the grey face patch the blur is measured on, so the measure ignores face size
# CLAHE (`equalize: clahe`): OpenCV's usual clip limit, tiles of about 80 px on the 640 px detection copy.
CLAHE_CLIP = 2.0
CLAHE_TILES = 8


class ImageDecodeError(ValueError):
    """Raised for bytes that are not a complete image; `reason` is "empty", "truncated" or "undecodable"."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


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


def detection_grey(grey: np.ndarray, max_side: int, equalize: str = "none") -> tuple[np.ndarray, float]:
    """Area-downscales so the longest side is at most `max_side`, then applies `equalize`; returns (image, scale).

    The cascade needs no contrast step: it divides every window by that window's own standard deviation (Viola &
    Jones's variance normalisation). A global histogram equalisation ("global") spends the grey levels on whatever
    fills most of the frame; where a wall, grass or sky does, the face is flattened and the cascade misses it (12 of
    the 52 faces-dev composites it lost). It does help on dark, low-contrast photos, so `align.equalize` tries it
    second. "clahe" equalises tile by tile. docs/params.md compares them.
    """
    scale = min(1.0, max_side / max(grey.shape[:2]))
    if scale < 1.0:
        size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
        scale = size[0] / grey.shape[1]  # the realised scale after rounding to whole pixels
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    if equalize == "global":
        return cv2.equalizeHist(grey), scale
    if equalize == "clahe":
        return cv2.createCLAHE(CLAHE_CLIP, (CLAHE_TILES, CLAHE_TILES)).apply(grey), scale
    return grey, scale


def rotation_about_centre(shape: tuple[int, ...], angle_deg: float) -> tuple[np.ndarray, tuple[int, int]]:
    """Affine (2x3) rotating an image counter-clockwise onto a canvas that holds all of it; returns (M, size)."""
    h, w = shape[:2]
    rad = math.radians(angle_deg)
    cos, sin = abs(math.cos(rad)), abs(math.sin(rad))
    out_w, out_h = math.ceil(w * cos + h * sin), math.ceil(w * sin + h * cos)
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle_deg, 1.0)
    matrix[:, 2] += ((out_w - w) / 2, (out_h - h) / 2)
    return matrix, (out_w, out_h)


@dataclass(frozen=True)
class Scan:
    """The grey copy the cascades scan: downscaled to `detect_max_side`, `equalize`d, and what a window may be.

    Attributes:
        small: the grey copy.
        scale: small pixels per original pixel.
        min_window: smallest window scanned (px of `small`): `min_face` original pixels, never below the
            cascade's native 24. Faces smaller than `min_face` are never candidates, so scanning for them would
            only cost time (they were ~40 % of the cascade's work on the sandbox photos).
        scale_factor: step between pyramid levels.
        coarse_scale_factor: the step of a first, coarse pass that only says where to scan finely; None scans
            every level everywhere.
    """

    small: np.ndarray
    scale: float
    min_window: int
    scale_factor: float
    coarse_scale_factor: float | None = None


def make_scan(grey: np.ndarray, params: AlignParams, equalize: str | None = None) -> Scan:
    """The detection copy of a grey photo under `params` (detect_max_side, min_face, the scale factors) with the
    contrast step `equalize` (default: the first of `params.equalize`)."""
    small, scale = detection_grey(grey, params.detect_max_side, equalize or params.equalize[0])
    min_window = max(WINDOW, math.ceil(params.min_face * scale))
    coarse = params.coarse_scale_factor
    return Scan(
        small, scale, min_window, params.scale_factor, coarse if coarse and coarse > params.scale_factor else None
    )


def size_order(box: Box) -> tuple[float, float, float]:
    """Sort key: largest area first, then top to bottom, left to right (detectMultiScale's own order is not stable)."""
    return (-box[2] * box[3], box[1], box[0])


def _largest_first(pairs: list[tuple[Box, float]]) -> list[tuple[Box, float]]:
    return sorted(pairs, key=lambda p: size_order(p[0]))


def cascade_boxes(
    grey: np.ndarray,
    cascade: str,
    scale_factor: float,
    min_window: int,
    max_window: int = 0,
    min_neighbors: int = MIN_NEIGHBORS,
) -> list[tuple[Box, float]]:
    """(box, confidence) pairs, largest first; confidence is the last cascade stage's weight (higher = surer)."""
    found, _, weights = load_cascade(cascade).detectMultiScale3(
        grey,
        scaleFactor=scale_factor,
        minNeighbors=min_neighbors,
        minSize=(min_window, min_window),
        maxSize=(max_window, max_window),
        outputRejectLevels=True,
    )
    return _largest_first(
        [(tuple(float(v) for v in b), float(w)) for b, w in zip(found, np.ravel(weights), strict=True)]
    )


def fine_step(scan: Scan) -> float:
    """How far (as a ratio) a face's width may lie from its coarse candidate: one coarse level plus grouping jitter."""
    assert scan.coarse_scale_factor is not None
    return scan.coarse_scale_factor * 1.1


def fine_boxes(grey: np.ndarray, scan: Scan, widths: list[float]) -> list[tuple[Box, float]]:
    """The full pass (`scale_factor`, MIN_NEIGHBORS votes) over the whole frame, at the window sizes one coarse step
    either side of the candidates' `widths`: a photo whose faces are all large never pays for the small windows."""
    if not widths:
        return []
    step = fine_step(scan)
    low, high = max(scan.min_window, math.floor(min(widths) / step)), math.ceil(max(widths) * step)
    return cascade_boxes(grey, FRONTAL_CASCADE, scan.scale_factor, low, high)


def coarse_to_fine(grey: np.ndarray, scan: Scan) -> list[tuple[Box, float]]:
    """Frontal boxes from a coarse pass that says which window sizes hold a face, then the full pass at those sizes.

    The coarse pass (`coarse_scale_factor`, one overlap vote) visits a fraction of the windows and keeps nearly every
    face as a candidate. The full pass runs on the whole frame, exactly as an exhaustive scan would (same pyramid,
    MIN_NEIGHBORS votes), but only over window sizes near the coarse candidates. On faces-landmarks it finds the
    faces the exhaustive scan finds (recall at IoU >= 0.5: 0.795 vs 0.793); on the sandbox photos it costs 0.7x.
    """
    assert scan.coarse_scale_factor is not None
    coarse = load_cascade(FRONTAL_CASCADE).detectMultiScale(
        grey, scaleFactor=scan.coarse_scale_factor, minNeighbors=1, minSize=(scan.min_window, scan.min_window)
    )
    return fine_boxes(grey, scan, [float(w) for _, _, w, _ in coarse])


def pyramid_sizes(scan: Scan, shape: tuple[int, ...]) -> list[int]:
    """The coarse pass's window sizes (px of the grey copy) from `min_window` up to the short side of `shape`.

    They are OpenCV's own levels, 24 px times a power of `coarse_scale_factor`, rounded, so a call with
    minSize = maxSize = one of them scans exactly that level.
    """
    assert scan.coarse_scale_factor is not None
    sizes, factor = [], 1.0
    while (size := round(WINDOW * factor)) <= min(shape[:2]):
        if size >= scan.min_window:
            sizes.append(size)
        factor *= scan.coarse_scale_factor
    return sizes


def scan_top_down(
    scan: Scan, angle_deg: float, judge: Callable[[list[tuple[Box, float]]], float], smallest: float = 0.0
) -> None:
    """Scans one frame coarse-to-fine from the largest window down, and stops once nothing smaller matters.

    The coarse pass runs one level at a time and groups its windows as it goes (the grouping `detectMultiScale`
    does with one overlap vote). A candidate goes to the full pass (`fine_boxes`) once the descent is a whole
    `fine_step` below it, when its windows at the smaller sizes have joined its group. `judge` receives each batch of
    new boxes (original pixels, none that overlaps an earlier box by IoU >= 0.5) and answers the smallest face width
    (original pixels) that still matters; the descent stops at the first level that could only find smaller ones.
    The small windows are where the cascade spends its time, and a photo with one large face rarely needs them.
    `smallest` (original pixels) is a width known not to matter before the scan starts.
    """
    cascade = load_cascade(FRONTAL_CASCADE)
    frame = make_frame(scan, angle_deg)
    step = fine_step(scan)
    windows: list[list[int]] = []
    groups: list[Box] = []
    refined: list[Box] = []  # candidates the full pass has been run for (px of the grey copy)
    kept: list[Box] = []  # boxes handed to `judge` (original pixels)
    needed = smallest * scan.scale  # px of the grey copy

    def refine(ready: list[Box]) -> None:
        nonlocal needed
        new = [g for g in ready if not any(box_iou(g, done) >= 0.5 for done in refined)]
        if not new:
            return
        refined.extend(new)
        pairs = frame.to_original(fine_boxes(frame.grey, scan, [g[2] for g in new]))
        boxes = [(box, conf) for box, conf in pairs if not any(box_iou(box, k) >= 0.5 for k in kept)]
        kept.extend(box for box, _ in boxes)
        if boxes:
            needed = max(needed, judge(boxes) * scan.scale)

    for size in reversed(pyramid_sizes(scan, frame.grey.shape)):
        if size * step < needed:
            break
        found = cascade.detectMultiScale(
            frame.grey, scaleFactor=scan.coarse_scale_factor, minNeighbors=0, minSize=(size, size), maxSize=(size, size)
        )
        if len(found):
            windows.extend([int(v) for v in w] for w in found)
            grouped, _ = cv2.groupRectangles(windows, 1, GROUP_EPS)
            groups = [tuple(float(v) for v in g) for g in grouped]
        refine([g for g in groups if g[2] >= size * step])
    refine(groups)


def centre_inside(box: Box | None, region: Box | None) -> bool:
    """Whether the centre of `box` lies in `region` (False when either is missing)."""
    if box is None or region is None:
        return False
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return region[0] <= cx <= region[0] + region[2] and region[1] <= cy <= region[1] + region[3]


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def frontal_boxes(grey: np.ndarray, scan: Scan) -> list[tuple[Box, float]]:
    """Frontal (box, confidence) pairs of one frame's grey copy, coarse-to-fine when the scan says so."""
    if scan.coarse_scale_factor is None:
        return cascade_boxes(grey, FRONTAL_CASCADE, scan.scale_factor, scan.min_window)
    return coarse_to_fine(grey, scan)


def detect_faces(rgb: np.ndarray, params: AlignParams, angle_deg: float = 0.0) -> list[Box]:
    """Frontal Haar faces (unverified) in the image rotated by `angle_deg` first, largest first.

    Boxes are upright in the rotated frame; their centres are mapped back into the original image and their
    sizes are in original pixels, so for angle 0 they are plain original-image boxes.
    """
    return [box for box, _ in scan_frame(make_scan(to_grey(rgb), params), angle_deg)]


@dataclass(frozen=True)
class Frame:
    """The grey copy turned counter-clockwise by `angle_deg` onto a canvas that holds all of it (at 0, the copy itself).

    Attributes:
        grey: the image the cascade scans.
        scale: small-copy pixels per original pixel.
        inverse: 2x3 map from `grey` back to the small copy; None for the upright frame.
    """

    grey: np.ndarray
    scale: float
    inverse: np.ndarray | None = None

    def to_original(self, pairs: list[tuple[Box, float]]) -> list[tuple[Box, float]]:
        """(box, confidence) pairs of `grey` as boxes in original pixels, upright in this frame (see `detect_faces`)."""
        scale, found = self.scale, []
        for (x, y, w, h), conf in pairs:
            if self.inverse is None:
                found.append(((x / scale, y / scale, w / scale, h / scale), conf))
                continue
            # Box centre in pixel-centre coordinates, back through the rotation, then up to the original scale.
            cx, cy = self.inverse @ (x + w / 2 - 0.5, y + h / 2 - 0.5, 1.0)
            cx, cy, w, h = (cx + 0.5) / scale - 0.5, (cy + 0.5) / scale - 0.5, w / scale, h / scale
            found.append(((float(cx) + 0.5 - w / 2, float(cy) + 0.5 - h / 2, w, h), conf))
        return found


def make_frame(scan: Scan, angle_deg: float) -> Frame:
    """The frame of `scan` at `angle_deg`."""
    if angle_deg == 0.0:
        return Frame(scan.small, scan.scale)
    matrix, size = rotation_about_centre(scan.small.shape, angle_deg)
    rotated = cv2.warpAffine(scan.small, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return Frame(rotated, scan.scale, cv2.invertAffineTransform(matrix))


def scan_frame(scan: Scan, angle_deg: float) -> list[tuple[Box, float]]:
    """Frontal (box, confidence) pairs of one frame, every face at least `min_window`, boxes in original pixels."""
    frame = make_frame(scan, angle_deg)
    return frame.to_original(frontal_boxes(frame.grey, scan))


def profile_fires(scan: Scan) -> bool:
    """Whether the profile cascade finds a head turned either way (it knows one direction; the mirror the other),
    at least PROFILE_MIN_FACE x the scan's smallest window."""
    small, min_window = scan.small, round(PROFILE_MIN_FACE * scan.min_window)
    return any(
        cascade_boxes(img, PROFILE_CASCADE, max(scan.scale_factor, PROFILE_SCALE_FACTOR), min_window)
        for img in (small, cv2.flip(small, 1))
    )


def confirm_votes(grey: np.ndarray, box: Box, angle_deg: float) -> int:
    """Windows of the second frontal cascade that agree with `box`: about its size, centred within 20 % of it.

    The cascade scans only a small patch around the box, at every window from 0.7x to 1.4x the box, and every raw
    window counts (no grouping), so the count grades how face-like the box is. On faces-landmarks' 600 LFW faces
    98 % of Haar boxes get >= 3 votes (median 40); on drawn rackets, noise and bricks 85 % get fewer.
    """
    side = CONFIRM_PATCH
    patch = cv2.equalizeHist(sample_patch(grey, face_frame_matrix(box, angle_deg, side, CONFIRM_MARGIN), (side, side)))
    inner = side / (1 + 2 * CONFIRM_MARGIN)
    found = load_cascade(CONFIRM_CASCADE).detectMultiScale(
        patch, scaleFactor=1.05, minNeighbors=0, minSize=(round(0.7 * inner),) * 2, maxSize=(round(1.4 * inner),) * 2
    )
    centre = (side / 2, side / 2)
    return sum(math.dist((x + w / 2, y + h / 2), centre) < 0.2 * inner for x, y, w, h in found)


def skin_share(rgb: np.ndarray, box: Box, angle_deg: float) -> float:
    """Share of skin-coloured pixels in the cheeks-and-nose part of the box (rows 45-85 %, columns 20-80 %).

    That part is skin whatever covers the eyes (sunglasses) or the forehead (hair, a hat). Grey images score 0.
    """
    if rgb.ndim == 2:
        return 0.0
    side = 32
    patch = sample_patch(rgb, face_frame_matrix(box, angle_deg, side), (side, side))
    centre = patch[round(0.45 * side) : round(0.85 * side), round(0.2 * side) : round(0.8 * side)]
    ycrcb = cv2.cvtColor(np.ascontiguousarray(centre), cv2.COLOR_RGB2YCrCb)
    cr, cb = ycrcb[..., 1], ycrcb[..., 2]
    return float(((cr >= SKIN_CR[0]) & (cr <= SKIN_CR[1]) & (cb >= SKIN_CB[0]) & (cb <= SKIN_CB[1])).mean())


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


def blur_score(grey: np.ndarray, box: Box, angle_deg: float) -> float:
    """Variance of the Laplacian on the face box resampled to BLUR_SIZE, so it compares faces of any size.

    On the 348 faces-dev photos the sharpest faces score 120-6000; the only two below 60 (43, 50) are visibly
    blurred, and a Gaussian blur of sigma 3 % / 5 % of the face width drops 90 % / all faces below 60.
    """
    size = BLUR_SIZE
    patch = sample_patch(grey, face_frame_matrix(box, angle_deg, size), (size, size))
    return float(cv2.Laplacian(patch, cv2.CV_64F).var())
