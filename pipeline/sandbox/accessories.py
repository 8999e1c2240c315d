"""Hair, beards, moustaches, glasses and hats, drawn from catalogue option indices on a HeadShape."""

from __future__ import annotations

from functools import cache

import numpy as np

from pipeline.sandbox.drawing import (
    CX,
    EYE_DX,
    EYE_Y,
    Bump,
    Color,
    HeadShape,
    Path,
    Pen,
    Points,
    bezier,
    ellipse,
    mirror,
    shade,
    smooth,
    sym,
)

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
