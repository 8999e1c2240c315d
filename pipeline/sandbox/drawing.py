"""Anti-aliased shape drawing through an affine frame, shared by the avatar and photo renderers."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cache, cached_property

import cv2
import numpy as np

SHIFT = 4  # sub-pixel bits for cv2 drawing calls
Color = tuple[int, int, int]
Points = np.ndarray  # (N, 2) float, in the base units of a 256-pixel head canvas
Path = Sequence[tuple[float, float]]
PointsLike = np.ndarray | Path  # anything np.asarray turns into (N, 2) points
Bump = Callable[[np.ndarray], np.ndarray]  # extra growth of hair as a function of the angle on the skull


def affine(sx: float, sy: float, angle_deg: float, center: Sequence[float], to: Sequence[float]) -> np.ndarray:
    """A (2, 3) matrix that scales and rotates base units about `center` and moves `center` to `to`."""
    theta = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    linear = rot @ np.diag([sx, sy])
    offset = np.asarray(to, float) - linear @ np.asarray(center, float)
    return np.hstack([linear, offset[:, None]])


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The (2, 3) matrix applying `inner` first, then `outer`."""
    full = np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]])
    return full[:2]


def transform(matrix: np.ndarray, pts: PointsLike) -> np.ndarray:
    """Apply a (2, 3) matrix to (N, 2) points."""
    if not isinstance(pts, np.ndarray):
        pts = np.asarray(pts, float)
    return pts.reshape(-1, 2) @ matrix[:, :2].T + matrix[:, 2]


@cache
def _unit_arc(a0: float, a1: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.deg2rad(np.linspace(a0, a1, n, endpoint=(a1 - a0) % 360 != 0))
    return np.cos(t), np.sin(t)


def ellipse(center: Sequence[float], ax: float, ay: float, angle: float = 0.0, a0: float = 0.0, a1: float = 360.0,
            n: int = 40) -> Points:  # fmt: skip
    """Points on an ellipse arc, angles in degrees (0 = +x, 90 = +y i.e. down)."""
    cos_t, sin_t = _unit_arc(float(a0), float(a1), n)
    x, y = ax * cos_t, ay * sin_t
    if angle:
        c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
        x, y = c * x - s * y, s * x + c * y
    return np.stack([center[0] + x, center[1] + y], axis=1)


@cache
def _bernstein(order: int, n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    if order == 3:
        return np.hstack([(1 - t) ** 2, 2 * (1 - t) * t, t**2])
    return np.hstack([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3])


def bezier(*ctrl: Sequence[float], n: int = 16) -> Points:
    """Points on a quadratic (3 control points) or cubic (4) Bezier curve."""
    return _bernstein(len(ctrl), n) @ np.asarray(ctrl, float)


def smooth(pts: PointsLike, closed: bool = True, rounds: int = 2) -> Points:
    """Chaikin corner cutting: a smooth curve through the neighbourhood of `pts`."""
    p = np.asarray(pts, float)
    for _ in range(rounds):
        q = np.roll(p, -1, axis=0) if closed else p[1:]
        a = p if closed else p[:-1]
        cut = np.empty((2 * len(a), 2))
        cut[0::2], cut[1::2] = 0.75 * a + 0.25 * q, 0.25 * a + 0.75 * q
        p = cut if closed else np.vstack([p[:1], cut, p[-1:]])
    return p


def mirror(pts: Points, cx: float) -> Points:
    """Reflect points about the vertical line x = cx (and reverse them, keeping polygon orientation)."""
    out = np.asarray(pts, float)[::-1].copy()
    out[:, 0] = 2 * cx - out[:, 0]
    return out


def sym(*half: tuple[float, float]) -> list[tuple[float, float]]:
    """A left-to-right path symmetric about x = CX, from (dx, y) points given from the left end to the middle."""
    left = [(CX - dx, y) for dx, y in half]
    right = [(CX + dx, y) for dx, y in reversed(half) if dx != 0]
    return left + right


def shade(color: Sequence[float], factor: float) -> Color:
    """Scale a colour's brightness, clipped to 0..255."""
    return tuple(min(255, max(0, int(c * factor))) for c in color)  # type: ignore[return-value]


def mix(a: Sequence[float], b: Sequence[float], t: float) -> Color:
    """Linear blend of two colours: t = 0 gives a, t = 1 gives b."""
    return tuple(round(x * (1 - t) + y * t) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


@dataclass
class Pen:
    """Draws base-unit shapes onto an RGB uint8 image through an affine matrix.

    Attributes:
        image: the target, drawn in place.
        matrix: (2, 3) map from base units to pixels.
        outline: outline width in base units drawn around filled shapes; 0 draws none.
        outline_factor: outline colour as a brightness factor of the fill colour.
        mask: optional single-channel uint8 image of the same size that records (255) everything drawn.
    """

    image: np.ndarray
    matrix: np.ndarray
    outline: float = 0.0
    outline_factor: float = 0.45
    mask: np.ndarray | None = None
    unit: float = field(init=False)  # pixels per base unit
    _fixed: tuple[np.ndarray, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        m = self.matrix
        self.unit = float(np.sqrt(abs(m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0])))
        self._fixed = (m[:, :2].T * (1 << SHIFT), m[:, 2] * (1 << SHIFT))  # the matrix in fixed-point pixels

    def at(self, matrix: np.ndarray) -> Pen:
        """The same pen drawing through another matrix."""
        return replace(self, matrix=matrix)

    def _px(self, pts: PointsLike) -> np.ndarray:
        linear, offset = self._fixed
        if not isinstance(pts, np.ndarray):
            pts = np.asarray(pts, float)
        return np.rint(pts.reshape(-1, 2) @ linear + offset).astype(np.int32)

    def _width(self, width: float) -> int:
        return max(1, round(width * self.unit))

    def fill(self, pts: PointsLike, color: Color, outline: bool = True, outline_color: Color | None = None) -> None:
        """Fill a polygon, outlined when the pen has an outline width and `outline` is set."""
        px = self._px(pts)
        cv2.fillPoly(self.image, [px], color, cv2.LINE_AA, SHIFT)
        if self.mask is not None:
            cv2.fillPoly(self.mask, [px], 255, cv2.LINE_AA, SHIFT)
        if outline and self.outline > 0:
            edge = outline_color or shade(color, self.outline_factor)
            cv2.polylines(self.image, [px], True, edge, self._width(self.outline), cv2.LINE_AA, SHIFT)

    def stroke(self, pts: PointsLike, color: Color, width: float, closed: bool = False) -> None:
        """Draw a polyline `width` base units thick."""
        px = self._px(pts)
        cv2.polylines(self.image, [px], closed, color, self._width(width), cv2.LINE_AA, SHIFT)
        if self.mask is not None:
            cv2.polylines(self.mask, [px], closed, 255, self._width(width), cv2.LINE_AA, SHIFT)

    def dot(self, center: Sequence[float], radius: float, color: Color) -> None:
        """A filled circle (no outline), radius in base units."""
        self.fill(ellipse(center, radius, radius, n=max(12, int(6 + radius * self.unit))), color, outline=False)

    def blend(self, pts: PointsLike, color: Color, alpha: float) -> None:
        """Fill a polygon with a translucent colour."""
        with self.clip(pts, alpha) as sub:
            if sub is not None:
                sub.image[:] = color

    @contextmanager
    def clip(self, pts: PointsLike, alpha: float = 1.0) -> Iterator[Pen | None]:
        """Yield a pen on a copy of the polygon's bounding box; on exit only the inside of `pts` is kept.

        Yields None when the polygon lies outside the image.
        """
        px = transform(self.matrix, pts)
        h, w = self.image.shape[:2]
        x0, y0 = np.maximum(np.floor(px.min(axis=0)).astype(int) - 1, 0)
        x1, y1 = np.minimum(np.ceil(px.max(axis=0)).astype(int) + 2, [w, h])
        if x1 <= x0 or y1 <= y0:
            yield None
            return
        roi = self.image[y0:y1, x0:x1]
        moved = self.matrix.copy()
        moved[:, 2] -= (x0, y0)
        sub = Pen(roi.copy(), moved, self.outline, self.outline_factor)
        yield sub
        weight = np.zeros(roi.shape[:2], np.float32)
        cv2.fillPoly(weight, [sub._px(pts)], alpha, cv2.LINE_AA, SHIFT)
        roi[:] = cv2.blendLinear(sub.image, roi, weight, 1 - weight)


# ---- the base canvas: a 256-unit frontal head whose eye centres never move -----------------------------------------
CX, EYE_Y, EYE_DX = 128.0, 130.0, 25.0
BROW_Y, NOSE_Y, MOUTH_Y = 111.0, 158.0, 184.0
FACE_TOP = BROW_Y - 12.0  # top of the face box, which runs from just above the brows to the chin

# jaw option index -> (skull top, widest row, chin, half width, skull exponent, jaw exponent)
JAWS = (
    (58.0, 138.0, 212.0, 66.0, 2.0, 2.1),  # round
    (54.0, 134.0, 218.0, 60.0, 2.0, 1.9),  # oval
    (58.0, 140.0, 213.0, 64.0, 2.3, 3.8),  # square
    (46.0, 134.0, 226.0, 56.0, 2.0, 2.4),  # long
    (56.0, 128.0, 220.0, 67.0, 2.4, 1.6),  # heart
    (50.0, 136.0, 222.0, 55.0, 2.0, 2.2),  # narrow
)


@dataclass(frozen=True)
class HeadShape:
    """Face outline of one jaw option, in base units."""

    top: float
    mid: float
    chin: float
    hw: float
    skull_exp: float
    jaw_exp: float

    @classmethod
    @cache
    def of_jaw(cls, jaw_index: int) -> HeadShape:
        return cls(*JAWS[jaw_index])

    @cached_property
    def _profile(self) -> Points:
        return self.right_side()

    def right_side(self, n: int = 20) -> Points:
        """The right half of the outline, from the skull top down to the chin."""
        phi = np.linspace(0.0, np.pi / 2, n)
        c, s, up, low = np.cos(phi), np.sin(phi), 2 / self.skull_exp, 2 / self.jaw_exp
        upper = np.stack([CX + self.hw * c**up, self.mid - (self.mid - self.top) * s**up], 1)
        lower = np.stack([CX + self.hw * c**low, self.mid + (self.chin - self.mid) * s**low], 1)
        return np.vstack([upper[::-1], lower[1:]])

    def outline(self, grow: float = 0.0) -> Points:
        """The closed face outline, optionally grown outward by `grow` units."""
        right = self.right_side()
        if grow:
            center = np.array([CX, self.mid])
            d = right - center
            right = right + grow * d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
        return np.vstack([right, mirror(right, CX)[1:-1]])

    def half_width(self, y: float) -> float:
        """Half the face width at row y (0 above the skull or below the chin)."""
        right = self._profile
        return float(np.interp(y, right[:, 1], right[:, 0] - CX, left=0.0, right=0.0))

    def skull(self, grow: float, a0: float = -10.0, a1: float = 190.0, bump: Bump | None = None, n: int = 48,
              taper: float = 1.0) -> Points:  # fmt: skip
        """An arc over the skull grown by `grow` (plus bump(angle)), from angle a0 (right) to a1 (left).

        Angles in degrees measured from +x towards the top of the head; `taper` < 1 thins the growth at the sides.
        """
        a = np.deg2rad(np.linspace(a0, a1, n if bump is None else 2 * n))
        g = grow * (taper + (1 - taper) * np.abs(np.sin(a))) + (bump(a) if bump is not None else 0.0)
        c, s = np.cos(a), np.sin(a)
        e = 2 / self.skull_exp
        x = CX + (self.hw + g) * np.sign(c) * np.abs(c) ** e
        y = self.mid - (self.mid - self.top + g) * np.sign(s) * np.abs(s) ** e
        return np.stack([x, y], 1)


# ---- accessories: hair, beards, glasses and hats, drawn from option indices ---------------------------------------
HAT_COLORS = ((200, 40, 45), (40, 60, 120), (150, 110, 70), (30, 30, 35), (240, 240, 240), (90, 130, 80),
              (110, 90, 70), (130, 40, 90))  # fmt: skip
GLASSES_COLORS = ((40, 40, 45), (60, 60, 70), (20, 20, 22), (190, 160, 90), (150, 30, 40), (25, 25, 30))


def _cap(shape: HeadShape, grow: float, temple_y: float, hairline: Path, bump: Bump | None = None,
         taper: float = 1.0) -> Points:  # fmt: skip
    """Hair over the skull: an arc grown `grow` units down to `temple_y`, closed by a hairline through `hairline`."""
    e = 2 / shape.skull_exp
    s = np.clip((shape.mid - temple_y) / (shape.mid - shape.top + grow), -1, 1)
    angle = float(np.rad2deg(np.arcsin(np.sign(s) * np.abs(s) ** (1 / e))))
    outer = shape.skull(grow, angle, 180 - angle, bump, taper=taper)
    inner_x = shape.half_width(temple_y) - 1.5
    line = smooth([outer[-1], (CX - inner_x, temple_y), *hairline, (CX + inner_x, temple_y), outer[0]], False, 3)
    return np.vstack([outer, line[1:-1]])


def _long_back(shape: HeadShape, grow: float, bottom: float, wave: float = 0.0, bump: Bump | None = None) -> Points:
    """Hair hanging behind the head from the skull down to `bottom`."""
    arc = shape.skull(grow, 0, 180, bump)
    ys = np.linspace(shape.mid, bottom, 14)
    flare = 6 * (ys - shape.mid) / (bottom - shape.mid)
    x = CX + shape.hw + grow + flare + wave * np.sin(ys / 7.0)
    right = np.stack([x, ys], 1)
    return np.vstack([arc, mirror(right, CX)[::-1], right[::-1]])


def _part(hw: float, depth: float = 150, peak: float = 72) -> Path:
    """Hairline control points of a centre parting."""
    return sym((hw * 0.92, depth - 30), (hw * 0.5, 88), (3, peak))


@cache
def hair_shapes(shape: HeadShape, index: int) -> tuple[list[Points], list[Points]]:
    """(behind-the-head, over-the-head) polygons of a hair option index (0-7 short, 8-15 long)."""
    hw = shape.hw
    spikes = lambda a: 26 * np.abs((a * 8 / np.pi) % 1 - 0.5) * np.sin(a) ** 2  # noqa: E731
    curls = lambda a: 4 * np.abs(np.sin(a * 11))  # noqa: E731
    quiff = lambda a: 20 * np.exp(-(((a - 1.25) / 0.35) ** 2))  # noqa: E731
    arc = sym((hw * 0.6, 90), (0, 84))
    side_part = [(CX + f * hw, y) for f, y in ((-0.8, 104), (-0.2, 97), (0.3, 84), (0.7, 86))]
    short: dict[int, tuple[float, float, Path, Bump | None]] = {  # grow, temple row, hairline, bumps
        0: (2.5, 116, sym((hw * 0.55, 84), (0, 78)), None),
        1: (6, 118, sym((hw * 0.7, 94), (hw * 0.3, 88)), None),
        2: (9, 120, side_part, None),
        3: (9, 118, arc, spikes),
        4: (20, 126, arc, curls),
        5: (7, 118, sym((hw * 0.6, 90), (0, 82)), quiff),
        6: (8, 124, sym((hw * 0.85, 101), (0, 101)), None),
        7: (5, 122, sym((hw * 0.8, 100), (hw * 0.5, 72), (0, 80)), None),
    }
    if index in short:
        grow, temple, line, bump = short[index]
        return [], [_cap(shape, grow, temple, line, bump, taper=0.7 if index == 4 else 0.35)]
    fringe = sym((hw * 0.92, 124), (hw * 0.8, 99), (0, 99))
    sweep = [(CX + f * hw, y) for f, y in ((-0.92, 118), (-0.6, 104), (-0.1, 92), (0.5, 80), (0.9, 118))]
    tail_y = shape.mid + 30
    long = {
        8: ([_long_back(shape, 10, 252)], _cap(shape, 10, 150, _part(hw))),
        9: ([_long_back(shape, 14, 205)], _cap(shape, 13, 160, fringe)),
        10: ([ellipse((CX + hw + 4, tail_y), 12, 42, -15)], _cap(shape, 6, 118, arc)),
        11: ([_long_back(shape, 12, 256, wave=4)], _cap(shape, 12, 150, _part(hw))),
        12: ([ellipse((CX, shape.top - 8), 22, 20)], _cap(shape, 5, 118, arc)),
        13: ([_long_back(shape, 11, 228)], _cap(shape, 11, 150, sweep)),
        14: ([ellipse((CX - hw - 12, tail_y), 13, 36, 10), ellipse((CX + hw + 12, tail_y), 13, 36, -10)],
             _cap(shape, 7, 126, _part(hw, 126, 74))),
        15: ([_long_back(shape, 18, 245, wave=3, bump=curls)], _cap(shape, 16, 150, _part(hw, 150, 86), curls)),
    }  # fmt: skip
    back, front = long[index]
    return back, [front]


def draw_hair(pen: Pen, shape: HeadShape, index: int, color: Color, layer: str, deluxe: bool) -> None:
    """Draw the back or front layer of a hair option."""
    if index < 0:
        return
    back, front = hair_shapes(shape, index)
    for pts in back if layer == "back" else front:
        pen.fill(pts, color)
    if layer == "front" and deluxe:
        pen.stroke(shape.skull(-6, 55, 95, n=12), shade(color, 1.35) if sum(color) < 600 else shade(color, 0.9), 3)


def _jaw_band(shape: HeadShape, y0: float, grow: float, inner: Path) -> Points:
    """The face below row y0, grown outward by `grow`, closed by the `inner` path from left to right."""
    right = shape.right_side(40)
    right = right[right[:, 1] >= y0]
    d = right - (CX, shape.mid)
    right = right + grow * d / np.linalg.norm(d, axis=1, keepdims=True)
    return np.vstack([right, mirror(right, CX), smooth(inner, False, 2)])


def draw_beard(pen: Pen, shape: HeadShape, index: int, color: Color) -> None:
    """Draw a beard option below the mouth line (moustaches are drawn by `draw_moustache`)."""
    hw, chin = shape.hw, shape.chin
    full = _jaw_band(shape, 140, 3, sym((hw * 0.82, 140), (hw * 0.6, 164), (26, 172), (24, 196), (0, 202)))
    goatee = smooth([*sym((14, 194), (16, chin - 8), (0, chin + 3)), (CX, 199)])
    if index == 0:
        stubble = sym((hw * 0.8, 150), (hw * 0.55, 166), (24, 168), (26, 180), (0, 168))
        pen.blend(_jaw_band(shape, 150, 0.5, stubble), color, 0.2)
    elif index in (1, 6):
        pen.fill(goatee, color)
    elif index == 2:
        pen.fill(full, color)
    elif index == 4:  # chin strap along the jaw line
        right = shape.right_side(40)
        band = right[right[:, 1] >= 140]
        inner = (band - (CX, shape.mid)) * 0.9 + (CX, shape.mid)
        pen.fill(np.vstack([band, mirror(band, CX), mirror(inner, CX)[::-1], inner[::-1]]), color)
    elif index == 5:  # mutton chops hugging the face edge
        right = shape.right_side(60)
        edge = right[(right[:, 1] >= 116) & (right[:, 1] <= 180)] + (1.5, 0)
        width = np.linspace(6, 17, len(edge))[:, None]
        chop = np.vstack([edge, (edge - np.hstack([width, 0 * width]))[::-1]])
        pen.fill(chop, color)
        pen.fill(mirror(chop, CX), color)
    elif index == 7:  # long full beard
        pen.fill(smooth(sym((hw * 0.62, chin - 26), (hw * 0.45, chin + 24), (0, chin + 40))), color)
        pen.fill(full, color)


def draw_moustache(pen: Pen, index: int, color: Color) -> None:
    """Draw the moustache of beard options that have one."""
    if index in (2, 3, 6, 7):
        pen.fill(smooth(sym((25, 182), (12, 169), (0, 172)) + sym((12, 177), (0, 178))[::-1]), color)


def _rounded_rect(cx: float, cy: float, hw: float, hh: float, r: float) -> Points:
    corners = [(cx + hw - r, cy + hh - r, 0), (cx - hw + r, cy + hh - r, 90), (cx - hw + r, cy - hh + r, 180),
               (cx + hw - r, cy - hh + r, 270)]  # fmt: skip
    return np.vstack([ellipse((x, y), r, r, a0=a, a1=a + 90, n=6) for x, y, a in corners])


def draw_glasses(pen: Pen, shape: HeadShape, index: int, photo: bool = False) -> None:
    """Draw a glasses option: two rims around the fixed eye centres, a bridge and temples.

    Photos get thinner frames and lighter tints, as glasses look at a distance.
    """
    if index < 0:
        return
    color = GLASSES_COLORS[index]
    width = (1.8, 1.8, 4.2, 1.5, 3.0, 2.6)[index] * (0.6 if photo else 1.0)
    rims = []
    for side in (-1, 1):
        ex = CX + side * EYE_DX
        if index == 0:
            rim = ellipse((ex, EYE_Y), 15, 14)
        elif index in (1, 2, 5):
            rim = _rounded_rect(ex, EYE_Y + 1, 17, 12 if index != 5 else 11, 4 if index != 2 else 2)
        elif index == 3:
            local = [(-16, -10), (16, -11), (15, 4), (6, 14), (-10, 13), (-16, 2)]
            rim = smooth([(ex + side * x, EYE_Y + y) for x, y in local])
        else:
            local = [(-15, -7), (13, -10), (19, -15), (15, 6), (0, 12), (-13, 8)]
            rim = smooth([(ex + side * x, EYE_Y + y) for x, y in local])
        rims.append(rim)
        if index == 5:
            pen.blend(rim, (20, 24, 30), 0.5 if photo else 0.8)
        elif not photo:
            pen.blend(rim, (200, 225, 240), 0.15)
    for rim in rims:
        pen.stroke(rim, color, width, closed=True)
    pen.stroke(bezier((CX - 9, EYE_Y - 2), (CX, EYE_Y - 7), (CX + 9, EYE_Y - 2)), color, max(width * 0.8, 1.5))
    for side in (-1, 1):
        edge = shape.half_width(EYE_Y - 4)
        pen.stroke(np.array([(CX + side * (EYE_DX + 16), EYE_Y - 4), (CX + side * edge, EYE_Y - 5)]), color, width)


def _crown(shape: HeadShape, grow: float, bottom: float) -> Points:
    pts = shape.skull(grow, -30, 210)
    pts[:, 1] = np.minimum(pts[:, 1], bottom)
    return pts


def draw_hat(pen: Pen, shape: HeadShape, index: int) -> None:
    """Draw a hat option over the hair, its brim above the brows."""
    if index < 0:
        return
    color = HAT_COLORS[index]
    dark = shade(color, 0.7)
    hw, top = shape.hw, shape.top
    if index == 0:  # baseball cap
        pen.fill(_crown(shape, 9, 92), color)
        pen.fill(ellipse((CX, 92), hw + 10, 9, a0=0, a1=180, n=20), dark)
        pen.dot((CX, top - 8), 3, dark)
    elif index == 1:  # beanie with a pom-pom
        pen.dot((CX, top - 14), 10, shade(color, 1.2))
        pen.fill(_crown(shape, 12, 96), color)
        pen.fill(_rounded_rect(CX, 90, hw + 13, 8, 3), dark)
    elif index == 2:  # cowboy hat
        pen.fill(
            smooth(sym((hw * 0.66, 88), (hw * 0.56, top - 20), (hw * 0.22, top - 30), (0, top - 20)), True, 1), color
        )
        pen.fill(smooth(sym((hw + 52, 66), (hw, 84), (0, 92)) + sym((hw + 10, 90), (0, 98))[::-1]), dark)
    elif index == 3:  # top hat
        crown_top = max(top - 40, 6)
        pen.fill(_rounded_rect(CX, (crown_top + 90) / 2, hw * 0.72, (90 - crown_top) / 2, 2), color)
        pen.fill(_rounded_rect(CX, 80, hw * 0.72, 5, 1), (150, 30, 40))
        pen.fill(ellipse((CX, 90), hw + 22, 8), color)
    elif index == 4:  # headband
        band = np.vstack([bezier((CX - hw - 4, 92), (CX, 74), (CX + hw + 4, 92)),
                          bezier((CX + hw + 4, 102), (CX, 86), (CX - hw - 4, 102))])  # fmt: skip
        pen.fill(band, color)
    elif index == 5:  # bucket hat
        pen.fill(_crown(shape, 10, 90), color)
        pen.fill(smooth([*sym((hw + 26, 106), (hw + 10, 84)), (CX, 98)]), dark)
    elif index == 6:  # fedora
        pen.fill(smooth(sym((hw * 0.78, 88), (hw * 0.7, top - 16), (12, top - 26), (0, top - 18)), True, 1), color)
        pen.fill(_rounded_rect(CX, 78, hw * 0.76, 6, 1), (30, 30, 30))
        pen.fill(ellipse((CX, 90), hw + 30, 9), dark)
    else:  # beret
        pen.fill(ellipse((CX + 10, top + 10), hw + 16, 22, -8), color)
        pen.stroke(np.array([(CX + 12, top - 12), (CX + 14, top - 19)]), dark, 3)
