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
