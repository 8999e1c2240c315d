"""Harder test photos: real face photos composed onto large canvases among drawn distractors (textures, hands, logos).

Everything but the pasted photos is drawn here with OpenCV, so the set needs no material beyond the face photos
themselves, and its ground truth is known by construction: a face crop whose centre lies outside every pasted photo
is a false face.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.faces.detect import Box, decode_image

SKIN = ((224, 172, 140), (198, 134, 96), (160, 110, 80), (120, 80, 55), (240, 200, 170), (90, 60, 45))
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Composite:
    """One composed photo and where its real photos went.

    Attributes:
        image: RGB uint8 canvas.
        main: (x, y, w, h) of the pasted main photo, whose face is the one `align` should keep.
        background: (x, y, w, h) of a pasted small photo (a background face), or None.
        source: file of the main photo, relative to the photo root.
    """

    image: np.ndarray
    main: Box
    background: Box | None
    source: str


def _rng(*key: object) -> random.Random:
    digest = hashlib.sha256("\x1f".join(map(str, key)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _colour(rng: random.Random, low: int = 0, high: int = 255) -> tuple[int, int, int]:
    return tuple(rng.randint(low, high) for _ in range(3))  # type: ignore[return-value]


def texture(rng: random.Random, w: int, h: int) -> np.ndarray:
    """A full-canvas background: window blinds, blotchy noise, grass, bricks, or a noisy gradient."""
    kind = rng.choice(("blinds", "noise", "grass", "bricks", "gradient"))
    seed = rng.randrange(2**31)
    noise = np.random.default_rng(seed)
    if kind == "blinds":
        period = rng.randint(8, 30)
        rows = (np.arange(h) % period) / period
        profile = 0.55 + 0.45 * np.cos(rows * 2 * math.pi)
        base = np.array(_colour(rng, 120, 240), np.float32)
        image = profile[:, None, None] * base[None, None, :] * np.ones((1, w, 1), np.float32)
    elif kind == "noise":
        image = np.zeros((h, w, 3), np.float32)
        for sigma, weight in ((rng.uniform(2, 6), 0.5), (rng.uniform(10, 30), 1.0)):
            layer = cv2.GaussianBlur(noise.standard_normal((h, w)).astype(np.float32), (0, 0), sigma)
            image += weight * (layer / (layer.std() + 1e-6))[..., None]
        tint = np.array(_colour(rng, 20, 120), np.float32)
        image = tint + 35 * image * np.array([rng.uniform(0.6, 1.2) for _ in range(3)], np.float32)
    elif kind == "grass":
        image = np.full((h, w, 3), _colour(rng, 20, 80), np.uint8)
        for _ in range(w * h // 60):
            x, y = rng.randrange(w), rng.randrange(h)
            length, lean = rng.uniform(6, 25), rng.uniform(-0.5, 0.5)
            green = (rng.randint(30, 110), rng.randint(90, 200), rng.randint(20, 80))
            cv2.line(image, (x, y), (round(x + lean * length), round(y - length)), green, 1, cv2.LINE_AA)
        image = image.astype(np.float32)
    elif kind == "bricks":
        image = np.full((h, w, 3), _colour(rng, 150, 210), np.uint8)
        bw, bh = rng.randint(40, 90), rng.randint(18, 35)
        for row, y in enumerate(range(0, h, bh)):
            for x in range(-(row % 2) * bw // 2, w, bw):
                red = (rng.randint(120, 180), rng.randint(50, 80), rng.randint(30, 60))
                cv2.rectangle(image, (x + 2, y + 2), (x + bw - 2, y + bh - 2), red, -1)
        image = image.astype(np.float32)
    else:
        c0, c1 = (np.array(_colour(rng, 10, 230), np.float32) for _ in range(2))
        t = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
        image = (c0 * (1 - t) + c1 * t) * np.ones((h, 1, 1), np.float32)
    image = image + noise.normal(0, rng.uniform(2, 8), (h, w, 3)).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def draw_hand(image: np.ndarray, rng: random.Random, cx: float, cy: float, size: float) -> None:
    """An open hand in a skin tone: palm, four fingers, a thumb, knuckle creases, soft shading."""
    skin = np.array(rng.choice(SKIN), np.float32) * rng.uniform(0.8, 1.1)
    colour = tuple(int(v) for v in np.clip(skin, 0, 255))
    dark = tuple(int(v * 0.7) for v in colour)
    turn = rng.uniform(-0.6, 0.6)
    palm = (round(cx), round(cy))
    cv2.ellipse(image, palm, (round(0.28 * size), round(0.33 * size)), math.degrees(turn), 0, 360, colour, -1)
    width = max(3, round(0.11 * size))
    for i, (spread, length) in enumerate(((-0.35, 0.42), (-0.12, 0.5), (0.1, 0.48), (0.32, 0.38))):
        angle = turn + spread - math.pi / 2
        base = (cx + 0.2 * size * (i - 1.5) * math.cos(turn) / 1.5, cy - 0.25 * size)
        tip = (base[0] + length * size * math.cos(angle), base[1] + length * size * math.sin(angle))
        cv2.line(image, tuple(map(round, base)), tuple(map(round, tip)), colour, width, cv2.LINE_AA)
        mid = ((base[0] + tip[0]) / 2, (base[1] + tip[1]) / 2)
        cv2.line(image, (round(mid[0] - width / 2), round(mid[1])), (round(mid[0] + width / 2), round(mid[1])), dark, 1)
    side = rng.choice((-1, 1))
    thumb_base = (cx + side * 0.25 * size, cy)
    thumb_tip = (thumb_base[0] + side * 0.3 * size, thumb_base[1] - 0.25 * size)
    cv2.line(image, tuple(map(round, thumb_base)), tuple(map(round, thumb_tip)), colour, width + 1, cv2.LINE_AA)


def draw_logo(image: np.ndarray, rng: random.Random, cx: float, cy: float, size: float) -> None:
    """A club-crest-like logo: a ring or shield, inner shapes (dots, stripes, a star) and letters."""
    fg, bg = _colour(rng), _colour(rng)
    centre, radius = (round(cx), round(cy)), round(size / 2)
    if rng.random() < 0.5:
        cv2.circle(image, centre, radius, bg, -1, cv2.LINE_AA)
        cv2.circle(image, centre, radius, fg, max(2, radius // 8), cv2.LINE_AA)
    else:
        shield = np.array([(-1, -1), (1, -1), (1, 0.2), (0, 1), (-1, 0.2)]) * radius * 0.9 + (cx, cy)
        cv2.fillPoly(image, [shield.round().astype(np.int32)], bg, cv2.LINE_AA)
        cv2.polylines(image, [shield.round().astype(np.int32)], True, fg, max(2, radius // 10), cv2.LINE_AA)
    inner = rng.choice(("dots", "stripes", "star"))
    if inner == "dots":  # two dark dots over a bar: the shape Haar's face features look for
        for dx in (-0.3, 0.3):
            cv2.circle(image, (round(cx + dx * radius), round(cy - 0.2 * radius)), max(2, radius // 6), fg, -1)
        cv2.line(image, (round(cx - 0.3 * radius), round(cy + 0.35 * radius)),
                 (round(cx + 0.3 * radius), round(cy + 0.35 * radius)), fg, max(1, radius // 10))  # fmt: skip
    elif inner == "stripes":
        for k in range(-2, 3):
            x = round(cx + k * radius * 0.25)
            cv2.line(image, (x, round(cy - 0.6 * radius)), (x, round(cy + 0.6 * radius)), fg, max(1, radius // 12))
    else:
        reach = [(0.6 if j % 2 == 0 else 0.25) * radius for j in range(10)]
        points = [(cx + r * math.sin(j * math.pi / 5), cy - r * math.cos(j * math.pi / 5)) for j, r in enumerate(reach)]
        cv2.fillPoly(image, [np.array(points).round().astype(np.int32)], fg, cv2.LINE_AA)
    letters = "".join(rng.choice("ABCDEFGHKLMNPRSTUVWXYZ") for _ in range(rng.randint(2, 4)))
    scale = max(0.4, size / 120)
    cv2.putText(image, letters, (round(cx - 0.45 * radius), round(cy + 0.85 * radius)),
                cv2.FONT_HERSHEY_DUPLEX, scale, fg, max(1, round(scale)), cv2.LINE_AA)  # fmt: skip


def draw_racket(image: np.ndarray, rng: random.Random, cx: float, cy: float, size: float) -> None:
    """A racket: an oval frame strung with a grid, and a handle."""
    frame, strings = _colour(rng, 0, 120), _colour(rng, 180, 255)
    axes = (round(0.3 * size), round(0.4 * size))
    head = np.zeros(image.shape[:2], np.uint8)
    cv2.ellipse(head, (round(cx), round(cy - 0.1 * size)), axes, 0, 0, 360, 255, -1)
    grid = image.copy()
    step = max(3, round(size / 18))
    for v in range(0, image.shape[1], step):
        cv2.line(grid, (v, 0), (v, image.shape[0] - 1), strings, 1)
    for v in range(0, image.shape[0], step):
        cv2.line(grid, (0, v), (image.shape[1] - 1, v), strings, 1)
    image[head > 0] = grid[head > 0]
    cv2.ellipse(image, (round(cx), round(cy - 0.1 * size)), axes, 0, 0, 360, frame, max(2, round(size / 25)))
    cv2.line(image, (round(cx), round(cy + 0.3 * size)), (round(cx), round(cy + 0.7 * size)), frame, round(size / 12))


def draw_wheels(image: np.ndarray, rng: random.Random, cx: float, cy: float, size: float) -> None:
    """A car-like shape: a body with two dark wheels and two lights, a pair of blobs like eyes."""
    body = _colour(rng)
    cv2.rectangle(image, (round(cx - size / 2), round(cy - size / 5)), (round(cx + size / 2), round(cy + size / 6)),
                  body, -1)  # fmt: skip
    for dx in (-0.3, 0.3):
        cv2.circle(image, (round(cx + dx * size), round(cy + size / 6)), round(size / 9), (20, 20, 20), -1, cv2.LINE_AA)
        cv2.circle(image, (round(cx + dx * size * 1.3), round(cy - size / 12)), round(size / 20), (250, 240, 200), -1)


DISTRACTORS = (draw_hand, draw_logo, draw_racket, draw_wheels)


def _feathered_paste(canvas: np.ndarray, photo: np.ndarray, x: int, y: int) -> None:
    """Pastes with a soft 4 % border, so the rectangle's edge does not look like a feature."""
    h, w = photo.shape[:2]
    ramp = max(1, round(0.04 * min(w, h)))
    ys = np.minimum(np.arange(h), np.arange(h)[::-1])[:, None]
    xs = np.minimum(np.arange(w), np.arange(w)[::-1])[None, :]
    alpha = np.clip(np.minimum(ys, xs) / ramp, 0, 1)[..., None]
    region = canvas[y : y + h, x : x + w].astype(np.float32)
    canvas[y : y + h, x : x + w] = np.rint(alpha * photo + (1 - alpha) * region).astype(np.uint8)


def _overlaps(a: Box, b: Box, pad: float = 0.0) -> bool:
    return not (a[0] + a[2] + pad <= b[0] or b[0] + b[2] + pad <= a[0] or a[1] + a[3] + pad <= b[1]
                or b[1] + b[3] + pad <= a[1])  # fmt: skip


def compose(main: np.ndarray, key: str, background: np.ndarray | None = None) -> tuple[np.ndarray, Box, Box | None]:
    """Draws a canvas 2.5-4x the main photo's width with 3-6 distractors, the main photo and an optional small one.

    Returns:
        (RGB canvas, main photo's box, background photo's box or None); deterministic per `key`.
    """
    rng = _rng("composite", key)
    main_w = max(220, min(420, main.shape[1] * 1.6))  # keeps the main face well above align's min_face
    scale = main_w / main.shape[1]
    size = (round(main.shape[1] * scale), round(main.shape[0] * scale))
    pasted = cv2.resize(main, size, interpolation=cv2.INTER_AREA)
    ph, pw = pasted.shape[:2]
    width = round(pw * rng.uniform(2.5, 4.0))
    height = max(ph + 20, round(width / rng.uniform(3 / 4, 4 / 3)))
    canvas = texture(rng, width, height)
    mx, my = rng.randint(0, width - pw), rng.randint(0, height - ph)
    main_box: Box = (float(mx), float(my), float(pw), float(ph))
    taken = [main_box]
    back_box: Box | None = None
    if background is not None:
        bw = round(pw * rng.uniform(0.3, 0.4))
        small = cv2.resize(background, (bw, round(background.shape[0] * bw / background.shape[1])), cv2.INTER_AREA)
        for _ in range(50):
            bx, by = rng.randint(0, width - small.shape[1]), rng.randint(0, max(0, height - small.shape[0]))
            box = (float(bx), float(by), float(small.shape[1]), float(small.shape[0]))
            if by + small.shape[0] <= height and not _overlaps(box, main_box, 10):
                _feathered_paste(canvas, small, bx, by)
                back_box = box
                taken.append(box)
                break
    for _ in range(rng.randint(3, 6)):
        draw = rng.choice(DISTRACTORS)
        size = pw * rng.uniform(0.35, 0.9)
        for _ in range(50):
            cx, cy = rng.uniform(size / 2, width - size / 2), rng.uniform(size / 2, height - size / 2)
            box = (cx - size / 2, cy - size / 2, size, size)
            if not any(_overlaps(box, other) for other in taken):
                draw(canvas, rng, cx, cy, size)
                taken.append(box)
                break
    _feathered_paste(canvas, pasted, mx, my)
    return cv2.GaussianBlur(canvas, (0, 0), 0.6), main_box, back_box


def photo_files(root: Path) -> list[str]:
    """Image files under `root` (one folder per identity), relative and sorted."""
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def composite_set(root: Path, seed: int = 0, stride: int = 1) -> Iterator[Composite]:
    """One composite per photo under `root` (every `stride`-th), every second one with a small background face.

    The background face comes from another identity's photo, so it is a real face the policy must out-rank.
    """
    files = photo_files(root)
    if not files:
        raise FileNotFoundError(f"no images under {root}: point it at a folder of <identity>/<photos>")
    for index, name in enumerate(files[::stride]):
        rng = _rng("pick", seed, name)
        other = None
        if index % 2 == 1:
            others = [f for f in files if f.split("/")[0] != name.split("/")[0]]
            other = decode_image((Path(root) / rng.choice(others)).read_bytes())
        image, main, back = compose(decode_image((Path(root) / name).read_bytes()), f"{seed}/{name}", other)
        yield Composite(image, main, back, name)
