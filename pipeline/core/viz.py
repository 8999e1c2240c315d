"""Image grids and atomic PNG writes for sample sheets, reports and debugging."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.core.storage import atomic_write_bytes


def image_grid(
    images: Sequence[np.ndarray],
    cols: int,
    pad: int = 2,
    pad_value: int = 255,
    labels: Sequence[str] | None = None,
) -> np.ndarray:
    """Tile RGB uint8 images into one image, row-major, `cols` per row.

    Every image is resized (cv2.INTER_AREA) to the size of the first; grey images are expanded to RGB.

    Args:
        images: the tiles; at least one.
        cols: tiles per row (the last row is padded).
        pad: pixels of `pad_value` around and between tiles.
        pad_value: grey level of the padding.
        labels: optional short text drawn in the top-left corner of each tile.

    Raises:
        ValueError: on no images, cols < 1, or a label count that differs from the image count.
    """
    if not images:
        raise ValueError("image_grid needs at least one image")
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"got {len(labels)} labels for {len(images)} images")
    h, w = images[0].shape[:2]
    rows = -(-len(images) // cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), pad_value, np.uint8)
    for i, image in enumerate(images):
        tile = np.asarray(image)
        if tile.ndim == 2:
            tile = np.repeat(tile[..., None], 3, axis=2)
        if tile.shape[:2] != (h, w):
            tile = cv2.resize(tile, (w, h), interpolation=cv2.INTER_AREA)
        tile = tile[..., :3].astype(np.uint8, copy=False)
        if labels is not None and labels[i]:
            tile = tile.copy()
            _label(tile, str(labels[i]))
        y, x = pad + (i // cols) * (h + pad), pad + (i % cols) * (w + pad)
        grid[y : y + h, x : x + w] = tile
    return grid


def _label(tile: np.ndarray, text: str) -> None:
    """Draw small white-on-black text in the tile's top-left corner."""
    scale = max(0.3, tile.shape[1] / 640)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(tile, (0, 0), (tw + 4, th + base + 4), (0, 0, 0), -1)
    cv2.putText(tile, text, (2, th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def encode_png(rgb: np.ndarray, compression: int | None = None) -> bytes:
    """PNG bytes of an RGB (or grey) uint8 image; `compression` 0-9, None for OpenCV's default.

    Raises:
        ValueError: if OpenCV cannot encode the array.
    """
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    flags = [] if compression is None else [cv2.IMWRITE_PNG_COMPRESSION, compression]
    ok, buf = cv2.imencode(".png", bgr, flags)
    if not ok:
        raise ValueError(f"cv2.imencode could not encode an array of shape {rgb.shape} as PNG")
    return buf.tobytes()


def save_png(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """Write an RGB (or grey) uint8 image as PNG atomically (temp file in the same folder, then a rename)."""
    path = Path(path)
    atomic_write_bytes(path, encode_png(rgb))
    return path


@dataclass(frozen=True)
class Letterbox:
    """How a raw photo maps into its square shard image: shard = raw * scale + pad (pixel-edge coordinates)."""

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    raw_width: int
    raw_height: int

    def box(self, x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
        """A raw-photo (x, y, w, h) box in shard pixels."""
        return (x * self.scale_x + self.pad_x, y * self.scale_y + self.pad_y, w * self.scale_x, h * self.scale_y)


def letterbox(rgb: np.ndarray, size: int, fill: int = 0) -> tuple[np.ndarray, Letterbox]:
    """Fit the whole photo into a size x size square of grey level `fill` (black: pack's photos), centred, keeping its
    aspect ratio."""
    height, width = rgb.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    # INTER_AREA averages when shrinking (no aliasing); it degrades to nearest when enlarging, so use linear there.
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    out = np.full((size, size, 3), fill, np.uint8)
    out[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized[..., :3]
    return out, Letterbox(new_w / width, new_h / height, pad_x, pad_y, width, height)
