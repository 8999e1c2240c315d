"""The sandbox renderers: avatars per trait, synthetic identity photos that OpenCV's Haar cascade sees, and grids."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.core import traits
from pipeline.core.viz import encode_png, image_grid, save_png
from pipeline.sandbox.avatar import avatar_landmarks, render_avatar
from pipeline.sandbox.photo import (
    encode_jpeg,
    identity_spec,
    photo_jpeg_quality,
    photo_kind,
    render_photo,
)

PAIRS = [(g, s) for g in traits.GENDERS for s in traits.STYLES]


def _base_traits(gender: int, style: int) -> dict[str, int]:
    """A plain head with nothing that hides anything else: short hair, no hat, no glasses."""
    options = traits.catalogue_options(gender, style)
    base = {key: values[0] for key, values in options.items()}
    base.update(hair=2201, hat=traits.NONE, glasses=traits.NONE)
    return base


def _decode(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


# ---- avatars --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", traits.SCALES)
@pytest.mark.parametrize(("gender", "style"), PAIRS)
def test_avatar_is_a_deterministic_rgb_square(gender: int, style: int, scale: int) -> None:
    spec = traits.make_spec(gender, style, _base_traits(gender, style), scale=scale)
    image = render_avatar(spec)
    assert image.shape == (traits.BASE_SIZE * scale,) * 2 + (3,) and image.dtype == np.uint8
    assert np.array_equal(image, render_avatar(spec))
    assert np.array_equal(_decode(encode_png(image)), image)


@pytest.mark.parametrize(("gender", "style"), PAIRS)
def test_every_single_trait_change_changes_pixels(gender: int, style: int) -> None:
    base = _base_traits(gender, style)
    reference = render_avatar(traits.make_spec(gender, style, base))
    unchanged = []
    for key, values in traits.catalogue_options(gender, style).items():
        for value in values:
            if value != base[key]:
                image = render_avatar(traits.make_spec(gender, style, {**base, key: value}))
                if np.array_equal(image, reference):
                    unchanged.append(f"{key}={value}")
    assert not unchanged, f"these options draw nothing new for gender {gender} style {style}: {unchanged}"


def test_a_spec_missing_traits_fails_early() -> None:
    with pytest.raises(ValueError, match="lacks trait keys"):
        render_avatar(traits.AvatarSpec(1, 5, (("jaw", 1000),)))


def test_random_avatars_are_visibly_different() -> None:
    catalogue = traits.parse_catalogue(traits.catalogue_json())
    images = [render_avatar(s).astype(np.int16) for s in traits.sample_specs(catalogue, 24, 3, (1, 2), (4, 5))]
    closest = min(
        float(np.abs(a - b).mean()) for i, a in enumerate(images) for b in images[i + 1 :]
    )  # mean absolute difference per channel, 0..255
    assert closest > 3.0


def test_landmarks_are_level_eyes_inside_the_face_box() -> None:
    catalogue = traits.parse_catalogue(traits.catalogue_json())
    for spec in traits.sample_specs(catalogue, 60, 11, (1, 2), (4, 5)):
        marks = avatar_landmarks(spec)
        x, y, w, h = marks.face_box
        assert marks.left_eye[1] == marks.right_eye[1] and marks.left_eye[0] < marks.right_eye[0]
        for px, py in (marks.left_eye, marks.right_eye, marks.nose, marks.mouth):
            assert x < px < x + w and y < py < y + h
        assert marks.left_eye[1] < marks.nose[1] < marks.mouth[1]
        assert x >= 0 and y >= 0 and x + w <= traits.BASE_SIZE and y + h <= traits.BASE_SIZE


def test_scale_two_doubles_every_landmark() -> None:
    spec = traits.make_spec(2, 5, _base_traits(2, 5))
    one = avatar_landmarks(spec)
    two = avatar_landmarks(traits.make_spec(2, 5, spec.trait_dict, scale=2))
    for a, b in zip((one.left_eye, one.right_eye, one.nose, one.mouth, one.face_box),
                    (two.left_eye, two.right_eye, two.nose, two.mouth, two.face_box), strict=True):  # fmt: skip
        assert np.allclose(np.multiply(a, 2), b)


@pytest.mark.parametrize("eye", traits.catalogue_options(1, 5)["eye"])
def test_pupils_are_drawn_at_the_eye_landmarks(eye: int) -> None:
    sleepy = traits.option_index("eye", eye) == 4  # its lid hides the top half of the pupil
    for scale in (1, 2, 3):
        # light hair keeps the lid lines' anti-aliased pixels away from the pupil's near-black
        light = {"eye": eye, "hair_tone": traits.HAIR_TONES[9], "pupil_tone": traits.PUPIL_TONES[3]}
        spec = traits.make_spec(1, 5, {**_base_traits(1, 5), **light}, scale=scale)
        image = render_avatar(spec).astype(int)
        for ex, ey in (avatar_landmarks(spec).left_eye, avatar_landmarks(spec).right_eye):
            r = 12 * scale
            window = image[round(ey) - r : round(ey) + r + 1, round(ex) - r : round(ex) + r + 1]
            ys, xs = np.nonzero((np.abs(window - (18, 14, 14)) <= 3).all(axis=2))  # the pupil's own colour
            cx, cy = (xs.min() + xs.max()) / 2 + round(ex) - r, (ys.min() + ys.max()) / 2 + round(ey) - r
            assert abs(cx - ex) <= 0.5 and (sleepy or abs(cy - ey) <= 0.5), (eye, scale, cx - ex, cy - ey)


# ---- identities and photos ------------------------------------------------------------------------------------------


def test_identity_spec_is_stable_valid_and_differs_across_names() -> None:
    specs = [identity_spec(f"person_{i:02d}", 0) for i in range(30)]
    assert specs == [identity_spec(f"person_{i:02d}", 0) for i in range(30)]
    assert len(set(specs)) == 30 and all(s.style == 5 for s in specs)
    assert {s.gender for s in specs} == set(traits.GENDERS)
    for spec in specs:
        valid, key, message = traits.validate_query(spec.query())
        assert valid == spec, (key, message)
    assert identity_spec("person_00", 1) != specs[0]


def test_photo_kinds_are_mostly_single() -> None:
    kinds = [photo_kind("person_00", i, 0) for i in range(400)]
    assert kinds == [photo_kind("person_00", i, 0) for i in range(400)]
    assert 8 <= kinds.count("no_face") <= 35 and 8 <= kinds.count("two_faces") <= 35
    qualities = [photo_jpeg_quality("person_00", i, 0) for i in range(100)]
    assert min(qualities) >= 60 and max(qualities) <= 95 and len(set(qualities)) > 10


def test_photo_is_deterministic_and_framed() -> None:
    for index in range(12):
        photo = render_photo("person_03", index, 7)
        again = render_photo("person_03", index, 7)
        assert np.array_equal(photo.image, again.image) and photo.faces == again.faces
        h, w = photo.image.shape[:2]
        assert photo.image.dtype == np.uint8 and 320 <= w <= 640 and 0.74 <= w / h <= 1.34
        assert photo.kind == photo_kind("person_03", index, 7)
        assert len(photo.faces) == {"single": 1, "no_face": 0, "two_faces": 2}[photo.kind]
        for face in photo.faces:
            x, y, fw, fh = face.face_box
            assert x >= 0 and y >= 0 and x + fw <= w and y + fh <= h
            assert 0.15 * w <= fw <= 0.5 * w


def test_jpeg_round_trip_and_bad_quality() -> None:
    image = render_photo("person_01", 0, 0).image
    decoded = _decode(encode_jpeg(image, 90))
    assert decoded.shape == image.shape and np.abs(decoded.astype(int) - image).mean() < 4
    with pytest.raises(ValueError, match="quality"):
        encode_jpeg(image, 0)


@dataclass(frozen=True)
class _Seen:
    kind: str
    boxes: np.ndarray
    eyes: tuple[tuple[float, float], ...]


@cache
def _haar() -> cv2.CascadeClassifier:
    return cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")


def _seen(name: str, index: int, seed: int) -> _Seen:
    """Render, JPEG-encode at the host's quality, decode, and run the Haar cascade the `align` stage runs."""
    photo = render_photo(name, index, seed)
    grey = cv2.cvtColor(_decode(encode_jpeg(photo.image, photo_jpeg_quality(name, index, seed))), cv2.COLOR_RGB2GRAY)
    boxes = _haar().detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(30, 30))
    eyes = tuple(e for face in photo.faces for e in (face.left_eye, face.right_eye))
    return _Seen(photo.kind, np.asarray(boxes).reshape(-1, 4), eyes)


@pytest.fixture(scope="module")
def single_photos() -> list[_Seen]:
    """At least 200 single-face photos of 24 identities."""
    seen = [_seen(f"person_{i:02d}", j, 0) for i in range(24) for j in range(10)]
    singles = [s for s in seen if s.kind == "single"]
    assert len(singles) >= 200
    return singles


def test_haar_finds_exactly_one_face_in_single_photos(single_photos: list[_Seen]) -> None:
    rate = sum(len(s.boxes) == 1 for s in single_photos) / len(single_photos)
    assert rate >= 0.90, f"Haar found exactly one face in {rate:.1%} of {len(single_photos)} single photos"


def test_ground_truth_eyes_lie_in_the_haar_box(single_photos: list[_Seen]) -> None:
    found = [s for s in single_photos if len(s.boxes) == 1]
    inside = [all(x <= ex <= x + w and y <= ey <= y + h for ex, ey in s.eyes) for s in found for x, y, w, h in s.boxes]
    assert sum(inside) / len(inside) >= 0.95


@pytest.mark.parametrize(("kind", "expected", "floor"), [("no_face", 0, 0.8), ("two_faces", 2, 0.75)])
def test_haar_counts_no_face_and_two_face_photos(kind: str, expected: int, floor: float) -> None:
    picks = [
        (f"person_{i:02d}", j) for i in range(40) for j in range(60) if photo_kind(f"person_{i:02d}", j, 0) == kind
    ]
    seen = [_seen(name, index, 0) for name, index in picks[::3][:30]]
    rate = sum(len(s.boxes) == expected for s in seen) / len(seen)
    assert rate >= floor, f"Haar found {expected} faces in {rate:.1%} of {len(seen)} {kind} photos"


# ---- grids ----------------------------------------------------------------------------------------------------------


def test_image_grid_tiles_and_resizes(tmp_path: Path) -> None:
    tiles = [np.full((32, 40, 3), 10 * i, np.uint8) for i in range(4)] + [np.zeros((64, 80, 3), np.uint8)]
    grid = image_grid(tiles, cols=3, pad=2, labels=[str(i) for i in range(5)])
    assert grid.shape == (2 * (32 + 2) + 2, 3 * (40 + 2) + 2, 3) and grid.dtype == np.uint8
    assert (grid[0] == 255).all() and (grid[-6:, -20:] == 255).all()  # padding, and the empty last cell
    with pytest.raises(ValueError, match="labels"):
        image_grid(tiles, cols=2, labels=["only one"])
    path = save_png(tmp_path / "sub" / "grid.png", grid)
    assert np.array_equal(_decode(path.read_bytes()), grid)
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]
