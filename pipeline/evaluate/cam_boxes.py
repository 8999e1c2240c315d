"""CAM boxes: regions above a share of a heat map's peak (scikit-image), IoU with the Haar box, the floor, overlays."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np
from skimage.measure import label, regionprops

BOX_MODES = ("largest", "every")
CAM_COLOUR = (0, 255, 0)  # RGB: the CAM's box
HAAR_COLOUR = (255, 0, 255)  # the Haar face box from `align`


class Box(NamedTuple):
    """An axis-aligned box in pixel-edge coordinates: x, y of the top-left corner, width, height."""

    x: float
    y: float
    w: float
    h: float

    @property
    def area(self) -> float:
        return max(0.0, self.w) * max(0.0, self.h)

    def corners(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) rounded, for drawing (x1, y1 inclusive)."""
        return round(self.x), round(self.y), round(self.x + self.w) - 1, round(self.y + self.h) - 1


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when either is empty)."""
    width = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    height = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    inter = max(0.0, width) * max(0.0, height)
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def regions(heat: np.ndarray, threshold: float = 0.2) -> list[Box]:
    """The bounding box of every 8-connected region of `heat` above `threshold` x its maximum, largest area first.

    Args:
        heat: (H, W) map, e.g. a min-max scaled class activation map.
        threshold: share of the map's maximum (the CAM paper's 0.2).
    """
    peak = float(np.max(heat)) if heat.size else 0.0
    if peak <= 0:
        return []
    labelled = label(heat > threshold * peak, connectivity=2)
    found = sorted(regionprops(labelled), key=lambda region: region.area, reverse=True)
    return [Box(x0, y0, x1 - x0, y1 - y0) for y0, x0, y1, x1 in (region.bbox for region in found)]


def cam_box(
    heat: np.ndarray, threshold: float = 0.2, mode: str = "largest", scale: float = 1.0
) -> tuple[Box | None, list[Box]]:
    """The box a CAM answers with, and the regions it came from.

    `largest`: the box of the largest region (Zhou et al.). `every`: the box that encloses every region (the seed
    drew a box per region; for one answer per photo they are merged, never picked by their overlap with the truth).
    `scale` then resizes the box about its centre: a CAM region covers the head, the Haar box the inner face, and a
    factor calibrated on val boxes (as the threshold is) maps one onto the other.

    Returns:
        (box, regions): box is None for a map with no region (a flat map); the regions are not rescaled.
    """
    if mode not in BOX_MODES:
        raise ValueError(f"mode={mode!r}: use one of {BOX_MODES}")
    found = regions(heat, threshold)
    if not found:
        return None, []
    if mode == "largest":
        box, kept = found[0], found[:1]
    else:
        x0, y0 = min(b.x for b in found), min(b.y for b in found)
        x1, y1 = max(b.x + b.w for b in found), max(b.y + b.h for b in found)
        box, kept = Box(x0, y0, x1 - x0, y1 - y0), found
    return rescaled(box, scale), kept


def rescaled(box: Box, scale: float) -> Box:
    """The box resized by `scale` about its centre."""
    if scale == 1.0:
        return box
    centre_x, centre_y = box.x + box.w / 2, box.y + box.h / 2
    return Box(centre_x - box.w * scale / 2, centre_y - box.h * scale / 2, box.w * scale, box.h * scale)


@dataclass
class Localisation:
    """IoU of each photo's answer with its Haar box; `localised` counts IoU >= `min_iou`."""

    min_iou: float = 0.5
    ious: list[float] = field(default_factory=list)

    def add(self, answer: Box | None, truth: Box) -> float:
        value = iou(answer, truth) if answer is not None else 0.0
        self.ious.append(value)
        return value

    @property
    def localised(self) -> float:
        """Share of photos whose box overlaps the Haar box with IoU >= min_iou."""
        return float(np.mean(np.asarray(self.ious) >= self.min_iou)) if self.ious else 0.0

    @property
    def mean_iou(self) -> float:
        return float(np.mean(self.ious)) if self.ious else 0.0


def prior_box(boxes: Sequence[Box]) -> Box:
    """The floor's answer: the mean Haar box of the training photos (mean x, y, w, h), the same for every photo."""
    if not boxes:
        raise ValueError("prior_box needs at least one box")
    x, y, w, h = np.mean(np.asarray(boxes, dtype=np.float64), axis=0)
    return Box(float(x), float(y), float(w), float(h))


def floor(test_boxes: Sequence[Box], train_boxes: Sequence[Box], side: int, min_iou: float = 0.5) -> dict[str, float]:
    """What box answers that never look at the test photo reach: the mean training box, and the whole image."""
    prior, whole = prior_box(train_boxes), Box(0.0, 0.0, float(side), float(side))
    out = {}
    for name, answer in (("prior", prior), ("whole", whole)):
        scored = Localisation(min_iou)
        for truth in test_boxes:
            scored.add(answer, truth)
        out[f"{name}_localised"], out[f"{name}_mean_iou"] = scored.localised, scored.mean_iou
    return out


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """(H, W) map in [0, 1] -> (H, W, 3) RGB uint8, the JET colour map (blue = low, red = high)."""
    grey = np.clip(heat * 255, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(grey, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def draw_overlay(
    rgb: np.ndarray,
    heat: np.ndarray,
    boxes: Sequence[Box] = (),
    truth: Box | None = None,
    text: str = "",
    alpha: float = 0.45,
) -> np.ndarray:
    """The photo under its heat map, the CAM boxes (green), the Haar box (magenta) and a caption.

    Args:
        rgb: (H, W, 3) uint8 photo.
        heat: (h, w) map in [0, 1]; resized to the photo.
        boxes: boxes in the photo's pixels.
        truth: the Haar box, when known.
        text: a caption drawn at the top left.
        alpha: weight of the heat map.
    """
    height, width = rgb.shape[:2]
    if heat.shape != (height, width):
        heat = cv2.resize(heat.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    out = cv2.addWeighted(rgb, 1 - alpha, heat_colours(heat), alpha, 0)
    thickness = max(1, round(max(height, width) / 200))
    if truth is not None:
        x0, y0, x1, y1 = truth.corners()
        cv2.rectangle(out, (x0, y0), (x1, y1), HAAR_COLOUR, thickness)
    for box in boxes:
        x0, y0, x1, y1 = box.corners()
        cv2.rectangle(out, (x0, y0), (x1, y1), CAM_COLOUR, thickness)
    if text:
        scale = max(0.35, width / 700)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(out, (0, 0), (tw + 6, th + base + 6), (0, 0, 0), -1)
        cv2.putText(out, text, (3, th + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out
