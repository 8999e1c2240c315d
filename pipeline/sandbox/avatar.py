"""Cartoon head renderer: one deterministic frontal avatar per trait combination, drawn with OpenCV."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

import numpy as np

from pipeline.core.traits import BASE_SIZE, NONE, TRAIT_KEYS, AvatarSpec, option_index, tone_to_rgb
from pipeline.sandbox.accessories import draw_beard, draw_glasses, draw_hair, draw_hat, draw_moustache
from pipeline.sandbox.drawing import (
    BROW_Y,
    CX,
    EYE_DX,
    EYE_Y,
    FACE_TOP,
    MOUTH_Y,
    NOSE_Y,
    Color,
    HeadShape,
    Pen,
    Points,
    affine,
    bezier,
    ellipse,
    mix,
    shade,
    smooth,
    transform,
)

BACKGROUND = (244, 243, 238)
BROW_MAX = 5.5
INNER_MOUTH, TEETH, TONGUE = (95, 30, 38), (250, 250, 244), (222, 104, 112)


@dataclass(frozen=True)
class Landmarks:
    """Face points in pixels of the rendered image; left_eye is the IMAGE-left eye (smaller x)."""

    left_eye: tuple[float, float]
    right_eye: tuple[float, float]
    nose: tuple[float, float]
    mouth: tuple[float, float]
    face_box: tuple[float, float, float, float]  # x, y, w, h, roughly brows-to-chin like a Haar face box


def posed_landmarks(shape: HeadShape, face: np.ndarray, nose: np.ndarray | None = None) -> Landmarks:
    """Landmarks of a head whose features are drawn through the (2, 3) matrices `face` and `nose`."""
    top = FACE_TOP
    eyes = transform(face, [(CX - EYE_DX, EYE_Y), (CX + EYE_DX, EYE_Y)])
    mouth = transform(face, [(CX, MOUTH_Y)])[0]
    nose_pt = transform(face if nose is None else nose, [(CX, NOSE_Y)])[0]
    corners = transform(face, [(CX - shape.hw, top), (CX + shape.hw, top), (CX - shape.hw, shape.chin),
                               (CX + shape.hw, shape.chin)])  # fmt: skip
    (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
    return Landmarks(
        left_eye=(float(eyes[0, 0]), float(eyes[0, 1])),
        right_eye=(float(eyes[1, 0]), float(eyes[1, 1])),
        nose=(float(nose_pt[0]), float(nose_pt[1])),
        mouth=(float(mouth[0]), float(mouth[1])),
        face_box=(float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
    )


@dataclass(frozen=True)
class Head:
    """What the renderer needs from a spec: the option index of every part and the derived colours.

    With `photo` set, the same parts are drawn for a synthetic photo: colours keep their brightness relative to the
    skin, eyes and brows take realistic sizes, and outlines and cel shading are left to the photo's lighting.
    """

    parts: dict[str, int]
    shape: HeadShape
    skin: Color
    hair: Color
    brow: Color
    pupil: Color
    lips: Color
    mouth: Color  # inside of an open mouth
    teeth: Color
    blush: Color
    female: bool
    deluxe: bool
    photo: bool = False

    @classmethod
    def from_spec(cls, spec: AvatarSpec, photo: bool = False) -> Head:
        """Read a spec (whose traits come from the catalogue).

        Raises:
            ValueError: if the spec lacks a trait key.
        """
        traits = spec.trait_dict
        missing = [key for key in TRAIT_KEYS if key not in traits]
        if missing:
            raise ValueError(
                f"avatar spec lacks trait keys {missing}; build it with traits.validate_query or make_spec"
            )
        parts = {
            key: option_index(key, traits[key])  # style 5 of gender 1 lists every option
            for key in TRAIT_KEYS
            if key not in ("skin_tone", "hair_tone", "pupil_tone")
        }
        skin, hair = tone_to_rgb(traits["skin_tone"]), tone_to_rgb(traits["hair_tone"])
        lips = mix(skin, (196, 70, 86), 0.45 if spec.gender == 2 else 0.18)
        brow, pupil = shade(hair, 0.7), tone_to_rgb(traits["pupil_tone"])
        mouth, teeth, blush = INNER_MOUTH, TEETH, (236, 110, 120)
        if photo:  # photos keep each colour's brightness relative to the skin, as light does on a real face
            lips = mix(skin, (196, 70, 86), 0.4)
            lips, brow, pupil, mouth = (_within(c, skin, r) for c, r in ((lips, 0.75), (brow, 0.4), (pupil, 0.45),
                                                                          (mouth, 0.35)))  # fmt: skip
            teeth = _within(mix(skin, TEETH, 0.7), skin, 1.4)
            blush = _within(mix(skin, (220, 90, 100), 0.4), skin, 0.95)
        return cls(parts, HeadShape.of_jaw(parts["jaw"]), skin, hair, brow, pupil, lips, mouth, teeth, blush,
                   spec.gender == 2, spec.style == 5, photo)  # fmt: skip


def luma(color: Color) -> float:
    """Rec. 601 brightness of an RGB colour."""
    return 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]


def _within(color: Color, skin: Color, ratio: float) -> Color:
    """`color` darkened, if needed, to at most `ratio` times the brightness of `skin`."""
    return shade(color, min(1.0, ratio * luma(skin) / max(luma(color), 1.0)))


class Pens(NamedTuple):
    """Pens for the parts of a head: outline and hair (`head`), eyes/brows/mouth (`face`), and the nose."""

    head: Pen
    face: Pen
    nose: Pen


def _line_color(head: Head, factor: float = 0.62) -> Color:
    return shade(head.skin, factor)


def draw_face(pen: Pen, head: Head) -> None:
    """Neck, ears and the face fill (cel-shaded in the deluxe style)."""
    shape, skin = head.shape, head.skin
    neck_w = shape.hw * 0.52
    neck = np.array([(CX - neck_w, shape.chin - 50), (CX - neck_w - 4, 262), (CX + neck_w + 4, 262),
                     (CX + neck_w, shape.chin - 50)])  # fmt: skip
    pen.fill(neck, shade(skin, 0.9))
    if head.deluxe and not head.photo:
        with pen.clip(neck) as sub:
            if sub is not None:
                sub.fill(ellipse((CX, shape.chin - 4), shape.hw * 0.6, 18), shade(skin, 0.75), outline=False)
    ear = head.parts["ear"]
    for side in (-1, 1):
        x = CX + side * (shape.half_width(140) + (1, 0, 3, 1)[ear])
        if ear == 3:
            local = [(-4, 14), (6, 10), (12, -6), (14, -24), (4, -14), (-4, -12)]
            pts = smooth([(x + side * u, 140 + v) for u, v in local], True, 2)
        else:
            pts = ellipse((x, 141), *((9, 16), (7, 12), (12, 21), (0, 0))[ear])
        pen.fill(pts, skin)
        pen.stroke(bezier((x - side * 2, 132), (x + side * 5, 138), (x, 150)), _line_color(head, 0.8), 1.4)
    outline = shape.outline()
    if head.deluxe and not head.photo:
        pen.fill(outline, shade(skin, 0.9))
        light = np.array([CX - 14, shape.mid - 24])
        pen.fill((outline - light) * 0.9 + light, skin, outline=False)
    else:
        pen.fill(outline, skin)


# eye option index -> (half width, half height, outer-corner lift, iris radius)
EYES = ((12, 7, 0, 6), (10, 9, 0, 6), (13, 12, 0, 8), (12, 4.5, 0, 5), (12, 7, 0, 6), (5, 6, 0, 4.5), (12, 6.5, 4, 5.5),
        (12, 7, -3, 6))  # fmt: skip


@cache
def _eye_white(kind: int, side: int, photo: bool = False) -> tuple[Points, Points]:
    """(closed eye outline, upper lid curve) of an eye option around the origin; `side` +1 points outward right.

    Photos draw every option at a realistic size (no dot eyes, no saucers), keeping its shape and tilt.
    """
    a, b, tilt = (float(v) for v in EYES[kind][:3])
    if photo:
        a, b, tilt = min(max(a, 10), 12) * 0.85, min(max(b, 5.5), 8) * 0.85, tilt * 0.85
    if kind in (1, 2, 5):
        upper = ellipse((0, 0), a, b, a0=180, a1=360, n=17)
        lower = ellipse((0, 0), a, b, a0=0, a1=180, n=17)[1:-1]
    else:
        upper = bezier((-a, tilt * 0.3), (0, -2 * b - tilt * 0.2), (a, -tilt), n=17)
        lower = bezier((a, -tilt), (0, 1.6 * b), (-a, tilt * 0.3), n=17)[1:-1]
    upper[:, 0] *= side
    lower[:, 0] *= side
    return np.vstack([upper, lower]), upper


def draw_eyes(pen: Pen, head: Head) -> None:
    """Eye whites, irises in the pupil tone, pupils, catchlights, lids, lashes and eye details.

    Photos get eyes whose iris fills the opening under a dark lid line, as in real faces (and as Haar cascades
    expect), with fine lashes.
    """
    kind, lash, detail = head.parts["eye"], head.parts["eyelash"], head.parts["eye_details"]
    line = shade(head.brow, 0.6)
    dot_eyes = kind == 5 and not head.photo
    iris_r = EYES[kind][3]
    if head.photo:
        iris_r = min(max(EYES[kind][1], 5.5), 8) * 0.85 * 1.1
    # In photos the sclera stays close to the skin's brightness: a dark eye band is what face detectors look for.
    white = shade(mix(head.skin, (205, 200, 195), 0.15), 1.12) if head.photo else (252, 252, 250)
    lash_len, lash_w = (0.5, 0.8) if head.photo else (1.0, 1.0)
    for side in (-1, 1):
        ex, ey = CX + side * EYE_DX, EYE_Y
        center = np.array([ex, ey])

        def at(dx: float, dy: float, ex: float = ex) -> tuple[float, float]:
            return ex + dx, EYE_Y + dy

        outline, upper = _eye_white(kind, side, head.photo)
        outline, upper = outline + center, upper + center
        if detail == 2:
            pen.blend(ellipse(at(0, 9), 12, 5), (90, 60, 70), 0.12 if head.photo else 0.25)
        if not dot_eyes:
            pen.fill(outline, white, outline_color=line)
        with pen.clip(outline if not dot_eyes else ellipse((ex, ey), 6, 7)) as sub:
            if sub is not None:
                sub.dot((ex, ey), iris_r, head.pupil)
                sub.dot((ex, ey), iris_r * 0.5, (18, 14, 14))
                sub.dot(at(-side * 2, -2.5), max(iris_r * (0.2 if head.photo else 0.3), 1.2), (255, 255, 255))
                if kind == 4:  # sleepy: a heavy upper lid
                    sub.fill(np.vstack([upper, at(side * 14, -0.5), at(-side * 14, -0.5)]), head.skin, outline=False)
        if kind == 4:
            pen.stroke(np.array([at(-side * 12, 0), at(side * 12, -1)]), line, 2.0)
        pen.stroke(upper, line, 2.9 if head.photo else 2.2 if kind != 5 else 1.2)
        for u, (dx, dy), width in {0: [(-3, (4, -4), 1.3), (-2, (4, -4), 1.3), (-1, (4, -4), 1.3)],
                                   1: [(-1, (7, -4), 2.2)],
                                   2: [(u, (3, -7), 1.2) for u in (4, 7, 10, 13, 16)]}.get(lash, []):  # fmt: skip
            root = upper[u]
            tip = root + np.array([side * dx, dy]) * lash_len
            pen.stroke(np.array([root, tip]), line, width * lash_w)
        if lash == 1:  # winged liner
            pen.stroke(upper, line, 3.4)
        detail_line = _line_color(head, 0.82 if head.photo else 0.72)
        if detail == 0:  # bags
            pen.stroke(bezier(at(-9, 10), at(0, 15), at(9, 10)), detail_line, 1.3)
        elif detail == 1:  # crow's feet
            for dy in (-4, 0, 4):
                pen.stroke(np.array([at(side * 16, dy * 0.6), at(side * 22, dy * 1.4)]), detail_line, 1.1)
        elif detail == 3:  # lid crease
            pen.stroke(bezier(at(-10, -10), at(0, -16), at(10, -10)), detail_line, 1.2)


def draw_brows(pen: Pen, head: Head) -> None:
    """Brows in a darker hair tone: arch, tilt, thickness and length per option."""
    arch, tilt, th_in, th_out, half, bushy = (
        (0, 0, 3.0, 2.5, 14, 0), (0, 0, 6.5, 5.5, 15, 0), (6, 0, 3.0, 2.0, 15, 0), (6, 0, 6.0, 3.5, 15, 0),
        (1, 7, 5.0, 3.5, 14, 0), (3, 0, 5.0, 5.0, 10, 0), (2, 0, 8.0, 7.0, 16, 1), (2, -5, 5.0, 1.5, 14, 0),
    )[head.parts["brow"]]  # fmt: skip
    u = np.linspace(0.0, 1.0, 12)
    y = BROW_Y - arch * 4 * u * (1 - u) - tilt * (u - 0.5)
    th = th_in * (1 - u) + th_out * u
    if head.photo:  # photo brows read as dark bands even when the option is a thin line
        th = np.clip(th * 1.3, 4.0, BROW_MAX)
    jag = bushy * 1.6 * (np.arange(12) % 2)
    for side in (-1, 1):
        x = CX + side * (EYE_DX + half * (2 * u - 1) + 1)
        pts = np.vstack([np.stack([x, y - th / 2 - jag], 1), np.stack([x, y + th / 2], 1)[::-1]])
        pen.fill(smooth(pts, True, 1), head.brow, outline=False)


def draw_nose(pen: Pen, head: Head) -> None:
    """One of eight noses around the fixed nose tip."""
    kind, line = head.parts["nose"], _line_color(head)
    y = NOSE_Y
    nostrils = True
    if head.deluxe:
        pen.blend(smooth([(CX + 2, y - 22), (CX + 8, y - 4), (CX + 6, y + 4), (CX + 1, y + 2)], True, 2), line, 0.25)
    if kind == 0:
        pen.stroke(bezier((CX - 7, y), (CX, y + 6), (CX + 7, y)), line, 1.8)
    elif kind == 1:
        pen.stroke(
            np.vstack([[(CX + 3, y - 22)], bezier((CX + 6, y), (CX + 2, y + 5), (CX - 4, y + 4), n=8)]), line, 1.8
        )
        nostrils = False
    elif kind == 2:
        pen.fill(ellipse((CX, y - 2), 8, 7), shade(head.skin, 0.95), outline_color=line)
    elif kind == 3:
        pen.stroke(smooth([(CX, y - 18), (CX + 8, y + 4), (CX - 8, y + 4)], True, 1), line, 1.6, closed=True)
    elif kind == 4:
        for side in (-1, 1):
            pen.stroke(np.array([(CX + side * 4, y - 30), (CX + side * 6, y - 2)]), line, 1.4)
        pen.stroke(bezier((CX - 8, y), (CX, y + 6), (CX + 8, y)), line, 1.8)
    elif kind == 5:
        pen.stroke(bezier((CX - 14, y - 2), (CX, y + 10), (CX + 14, y - 2)), line, 2.0)
        for side in (-1, 1):
            a0 = -80 if side > 0 else 100
            pen.stroke(ellipse((CX + side * 12, y - 3), 4, 5, a0=a0, a1=a0 + 160, n=8), line, 1.5)
    elif kind == 6:
        pen.stroke(np.array([(CX - 6, y - 8), (CX, y + 5), (CX + 6, y - 7)]), line, 1.8)
        nostrils = False
    else:
        pen.stroke(np.vstack([bezier((CX + 1, y - 26), (CX + 14, y - 10), (CX + 2, y + 6), n=12), [(CX - 5, y + 2)]]),
                   line, 1.8)  # fmt: skip
    if nostrils:
        for side in (-1, 1):
            pen.dot((CX + side * 4, y + 2), 1.4, shade(head.skin, 0.45))


def draw_mouth(pen: Pen, head: Head) -> None:
    """One of ten mouths centred on the fixed mouth point."""
    kind, y = head.parts["mouth"], MOUTH_Y
    line = shade(mix(head.skin, (150, 40, 50), 0.5), 0.55)
    if kind in (0, 2, 4, 5, 8) and (head.female or head.deluxe):
        pen.fill(ellipse((CX, y + 1), 13, 5), head.lips, outline=False)
    curves = {  # smile, neutral, smirk, frown, tongue-out smile, small smile: (x, y) offsets of Bezier control points
        0: ((-16, -3), (0, 8), (16, -3)), 2: ((-13, 1), (0, 2), (13, 0)), 4: ((-14, 2), (2, 4), (16, -6)),
        5: ((-15, 6), (0, -6), (15, 6)), 7: ((-16, -3), (0, 8), (16, -3)), 8: ((-9, -1), (0, 4), (9, -1)),
    }  # fmt: skip
    if kind in curves:
        if kind == 7:
            pen.fill(
                ellipse((CX + 2, y + 3), 7, 8, a0=0, a1=180, n=12), mix(TONGUE, head.mouth, 0.3), outline_color=line
            )
        pen.stroke(bezier(*[(CX + dx, y + dy) for dx, dy in curves[kind]]), line, 2.2)
        return
    if kind == 6:
        mouth = smooth([(CX - 17, y - 6), (CX + 17, y - 6), (CX + 17, y + 6), (CX - 17, y + 6)], True, 2)
        pen.fill(mouth, head.teeth, outline_color=line)
        pen.stroke(np.array([(CX - 16, y), (CX + 16, y)]), shade(head.teeth, 0.7), 1.0)
        for x in (-8, 0, 8):
            pen.stroke(np.array([(CX + x, y - 5), (CX + x, y + 5)]), shade(head.teeth, 0.7), 0.8)
        pen.stroke(mouth, line, 1.8, closed=True)
        return
    if kind == 3:
        mouth = ellipse((CX, y + 2), 7, 9)
    else:
        half, depth = (18, 20) if kind == 1 else (22, 30)
        mouth = np.vstack([bezier((CX - half, y - 5), (CX, y - 2), (CX + half, y - 5), n=12),
                           bezier((CX + half, y - 5), (CX, y + depth), (CX - half, y - 5), n=16)[1:-1]])  # fmt: skip
    pen.fill(mouth, head.mouth, outline=False)
    with pen.clip(mouth) as sub:
        if sub is not None:
            sub.fill(ellipse((CX, y + (10 if kind != 3 else 9)), 12, 7), mix(TONGUE, head.mouth, 0.3), outline=False)
            if kind != 3:
                teeth = np.array([(CX - 30, y - 10), (CX + 30, y - 10), (CX + 30, y + 1), (CX - 30, y + 1)])
                sub.fill(teeth, head.teeth, outline=False)
    pen.stroke(mouth, line, 2.0, closed=True)


def draw_skin_details(pen: Pen, head: Head) -> None:
    """Cheek details (blush, freckles, dimples, cheekbones) and face lines (forehead, smile, frown)."""
    line = _line_color(head, 0.82 if head.photo else 0.72)  # wrinkles are faint in photos
    cheek, lines = head.parts["cheek_details"], head.parts["face_lines"]
    for side in (-1, 1):
        if cheek == 0:
            pen.blend(ellipse((CX + side * 36, 160), 11, 6), head.blush, 0.35)
        elif cheek == 1:
            for dx, dy in ((20, 150), (26, 145), (31, 152), (23, 157), (36, 147), (29, 159), (16, 144)):
                pen.dot((CX + side * dx, dy), 1.1, shade(head.skin, 0.72))
        elif cheek == 2:
            pen.stroke(bezier((CX + side * 22, 183), (CX + side * 26, 188), (CX + side * 23, 193)), line, 1.3)
        elif cheek == 3:
            pen.stroke(bezier((CX + side * 30, 148), (CX + side * 38, 155), (CX + side * 45, 146)), line, 1.3)
        if lines in (1, 3):
            pen.stroke(bezier((CX + side * 13, 166), (CX + side * 24, 175), (CX + side * 21, 191)), line, 1.3)
        if lines == 2:
            pen.stroke(np.array([(CX + side * 4, 104), (CX + side * 3, 116)]), line, 1.2)
    if lines in (0, 3):
        for y in (94.0, 100.0):
            pen.stroke(bezier((CX - 18, y + 1), (CX, y - 2), (CX + 18, y + 1)), line, 1.2)


def draw_head(pens: Pens, head: Head) -> None:
    """Draw a whole head, back to front."""
    hair, beard = head.parts["hair"], head.parts["beard"]
    # A beard sits in the face's own shadow: in photos it is never brighter than the skin.
    beard_color = _within(head.hair, head.skin, 0.9) if head.photo else head.hair
    draw_hair(pens.head, head.shape, hair, head.hair, "back", head.deluxe and not head.photo)
    draw_face(pens.head, head)
    draw_skin_details(pens.face, head)
    if beard != NONE:
        draw_beard(pens.face, head.shape, beard, beard_color)
    draw_nose(pens.nose, head)
    draw_mouth(pens.face, head)
    if beard != NONE:
        draw_moustache(pens.face, beard, beard_color)
    draw_eyes(pens.face, head)
    draw_brows(pens.face, head)
    draw_hair(pens.head, head.shape, hair, head.hair, "front", head.deluxe and not head.photo)
    draw_glasses(pens.face, head.shape, head.parts["glasses"], head.photo)
    draw_hat(pens.head, head.shape, head.parts["hat"])


def avatar_landmarks(spec: AvatarSpec) -> Landmarks:
    """Ground-truth face points of `render_avatar(spec)`, computed without drawing."""
    matrix = affine(spec.scale, spec.scale, 0.0, (0.0, 0.0), (0.0, 0.0))
    return posed_landmarks(HeadShape.of_jaw(option_index("jaw", spec.trait_dict["jaw"])), matrix)


@cache
def _blank(size: int) -> np.ndarray:
    image = np.empty((size, size, 3), np.uint8)
    image[:] = BACKGROUND
    image.flags.writeable = False
    return image


def render_avatar(spec: AvatarSpec) -> np.ndarray:
    """Draw the avatar of `spec` as an (S, S, 3) uint8 RGB image, S = BASE_SIZE * spec.scale."""
    image = _blank(BASE_SIZE * spec.scale).copy()
    head = Head.from_spec(spec)
    matrix = affine(spec.scale, spec.scale, 0.0, (0.0, 0.0), (0.0, 0.0))
    pen = Pen(image, matrix, 1.3 if head.deluxe else 2.6, 0.55 if head.deluxe else 0.32)
    draw_head(Pens(pen, pen, pen), head)
    return image
