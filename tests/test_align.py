"""Alignment: every reject reason, rotated photos come out upright, the warp itself, determinism."""

from __future__ import annotations

import hashlib
import math
import random
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.core.params import AlignParams
from pipeline.faces import detect
from pipeline.faces.align import (
    REJECT_REASONS,
    AlignResult,
    Candidate,
    align_bytes,
    align_face,
    align_to_landmarks,
    distinct_faces,
    face_boxes,
    policy_candidates,
)
from pipeline.faces.composite import draw_logo
from pipeline.faces.detect import box_iou, decode_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FACES_DEV = DATA / "faces-dev"
needs_faces_dev = pytest.mark.skipif(not FACES_DEV.is_dir(), reason=f"real photos not found at {FACES_DEV}")
REPO = Path(__file__).resolve().parents[1]


def photo(name: str) -> np.ndarray:
    return decode_image((FACES_DEV / name).read_bytes())


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def rotate(rgb: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = rgb.shape[:2]
    turn = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    return cv2.warpAffine(rgb, turn, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE), turn


LAURA = "laura_bush/lfw_Laura_Bush_0001.jpg"  # one frontal face, both eyes found by the cascades
TIGER = "tiger_woods/lfw_Tiger_Woods_0002.jpg"
SUNGLASSES = "elton_john/train_05.jpg"


def truncated_jpeg() -> bytes:
    data = (FACES_DEV / LAURA).read_bytes()
    return data[: len(data) // 2]


def smiley_logo() -> np.ndarray:
    """A drawn club-crest logo with two dots over a bar: the frontal cascade takes it for a face."""
    canvas = np.full((240, 320, 3), 200, np.uint8)
    draw_logo(canvas, random.Random(2), 160, 120, 150)
    return canvas


# Each case builds real input that must be rejected for exactly one reason.
REJECT_CASES = {
    "no_face": lambda cfg: jpeg_bytes(np.full((240, 320, 3), 128, np.uint8)),
    "multiple_faces": lambda cfg: jpeg_bytes(np.hstack([photo(LAURA), photo(TIGER)])),  # two of one size
    "not_a_face": lambda cfg: jpeg_bytes(smiley_logo()),
    # A real photo of a face turned away: the profile cascade fires, no frontal one does, even at +-15 degrees.
    "profile": lambda cfg: (FACES_DEV / "madonna" / "train_11.jpg").read_bytes(),
    # Dark sunglasses: skin below them passes verification, but the eye cascades find no eye.
    "no_eyes": lambda cfg: (FACES_DEV / SUNGLASSES).read_bytes(),
    "blurry": lambda cfg: jpeg_bytes(cv2.GaussianBlur(photo(LAURA), (0, 0), 3.5)),  # sigma = 5 % of the face
    "decode_error": lambda cfg: truncated_jpeg(),
}


@needs_faces_dev
@pytest.mark.parametrize("reason", sorted(REJECT_CASES))
def test_every_reject_reason_is_produced_and_recorded(reason):
    cfg = AlignParams(eyes_required=True)
    result = align_bytes(REJECT_CASES[reason](cfg), cfg)
    assert (result.status, result.reason) == ("rejected", reason)
    assert result.image is None
    assert result.record()["reason"] == reason


def test_reject_cases_cover_every_reason():
    assert set(REJECT_CASES) == set(REJECT_REASONS)


def test_the_logo_is_a_haar_face_that_only_verification_turns_down():
    result = align_face(smiley_logo(), AlignParams())
    assert (result.reason, result.n_faces, result.n_not_faces) == ("not_a_face", 0, 1)
    assert result.box is not None and result.votes >= AlignParams().verify_votes  # the alt2 cascade agrees ...
    assert align_face(smiley_logo(), AlignParams(verify=False)).status == "ok"  # ... Haar alone is fooled


@needs_faces_dev
def test_faces_narrower_than_min_face_are_never_candidates():
    small = jpeg_bytes(cv2.resize(photo(LAURA), (75, 75), interpolation=cv2.INTER_AREA))  # a ~35 px face
    assert align_bytes(small, AlignParams()).reason == "no_face"
    assert align_bytes(small, AlignParams(min_face=24)).status == "ok"


@pytest.mark.parametrize(
    "data", [b"", b"\xff\xd8\xff\xe0garbage", np.random.default_rng(0).bytes(5000)], ids=["empty", "header", "random"]
)
def test_bad_bytes_are_a_recorded_reject_not_a_crash(data):
    result = align_bytes(data, AlignParams())
    assert (result.status, result.reason) == ("rejected", "decode_error")
    assert result.detail


@needs_faces_dev
def test_eyes_behind_sunglasses_fall_back_to_geometry_unless_eyes_are_required():
    result = align_face(photo(SUNGLASSES), AlignParams())
    assert (result.status, result.eye_method) == ("ok", "geometry")


@needs_faces_dev
def test_largest_policy_keeps_a_dominant_face_and_reject_policy_does_not():
    big = cv2.resize(photo(LAURA), (300, 300), interpolation=cv2.INTER_CUBIC)
    tiger = cv2.resize(photo(TIGER), (100, 100), interpolation=cv2.INTER_AREA)  # his face ~52 px, Laura's ~137
    small = np.vstack([tiger, np.full((200, 100, 3), 255, np.uint8)])
    pair = np.hstack([big, small])
    assert align_face(pair, AlignParams(multiple_faces="reject")).reason == "multiple_faces"
    kept = align_face(pair, AlignParams(multiple_faces="largest", dominance=2.0))
    assert kept.status == "ok"
    assert kept.box[0] + kept.box[2] <= 300  # the box is Laura's, on the left half
    # Tiger's face has 1/7 of Laura's area: the top-down scan stops above his size, the full scan finds both faces
    assert kept.n_faces == 1 and len(face_boxes(pair, AlignParams())) == 2
    same_size = np.hstack([photo(LAURA), photo(TIGER)])
    assert align_face(same_size, AlignParams(multiple_faces="largest")).reason == "multiple_faces"


@needs_faces_dev
def test_a_face_on_a_wide_flat_background_is_found_without_global_equalisation():
    # A web photo shrunk into a large green gradient: equalising the whole frame spends the grey levels on the
    # gradient and flattens the face; the cascade's own per-window normalisation needs no help.
    face = cv2.resize(photo("tiger_woods/lfw_Tiger_Woods_0004.jpg"), (240, 240), interpolation=cv2.INTER_AREA)
    ramp = np.linspace(0.0, 1.0, 835, dtype=np.float32)[None, :, None]
    canvas = np.rint((1 - ramp) * (110, 210, 80) + ramp * (70, 190, 200)).astype(np.uint8).repeat(720, axis=0)
    canvas[138:378, 464:704] = face
    found = align_face(canvas, AlignParams(equalize=["none"]))
    assert found.status == "ok" and 464 <= found.box[0] + found.box[2] / 2 <= 704
    assert align_face(canvas, AlignParams(equalize="global", try_rotations=[])).reason == "no_face"
    assert align_face(canvas, AlignParams(equalize=["clahe"])).status == "ok"


def test_a_dark_photo_is_scanned_again_equalised_when_the_plain_copy_finds_no_face():
    from pipeline.sandbox.photo import encode_jpeg, photo_jpeg_quality, render_photo

    name = "bench_person_11"  # photo 0 is dark (mean grey level 48): one of the bench's faces only equalising finds
    dark = decode_image(encode_jpeg(render_photo(name, 0, 0).image, photo_jpeg_quality(name, 0, 0)))
    assert align_face(dark, AlignParams(equalize="none")).reason == "no_face"
    assert align_face(dark, AlignParams(equalize="global")).status == "ok"
    both = align_face(dark, AlignParams())
    assert both.status == "ok" and both.n_faces == 1


def test_boxes_whose_centres_lie_in_each_other_are_one_face():
    def cand(x: float, y: float, w: float, votes: int, face: bool = True) -> Candidate:
        return Candidate((x, y, w, w), 1.0, votes, None, face)

    on_face, shifted = cand(435, 400, 104, votes=47), cand(428, 341, 129, votes=3)  # IoU 0.36: not grouped
    neighbour = cand(560, 400, 100, votes=20)  # the next face in a group photo: its centre is outside both
    turned_down = cand(440, 405, 100, votes=1, face=False)
    assert distinct_faces([shifted, on_face, neighbour, turned_down]) == [on_face, neighbour]


class CountingCascade:
    """Stands in for the frontal cascade and records the smallest window each detectMultiScale call may use."""

    def __init__(self, cascade: cv2.CascadeClassifier) -> None:
        self.cascade, self.min_sizes = cascade, []

    def detectMultiScale(self, image, **kwargs):
        self.min_sizes.append(kwargs["minSize"][0])
        return self.cascade.detectMultiScale(image, **kwargs)

    def detectMultiScale3(self, image, **kwargs):
        self.min_sizes.append(kwargs["minSize"][0])
        return self.cascade.detectMultiScale3(image, **kwargs)


def scanned_windows(monkeypatch, rgb: np.ndarray, params: AlignParams) -> tuple[AlignResult, int]:
    """align_face with the frontal cascade counted: (the result, the smallest window the frontal scans used)."""
    counting = CountingCascade(detect.load_cascade(detect.FRONTAL_CASCADE))
    real = detect.load_cascade
    monkeypatch.setattr(detect, "load_cascade", lambda name: counting if name == detect.FRONTAL_CASCADE else real(name))
    result = align_face(rgb, params)
    monkeypatch.undo()
    return result, min(counting.min_sizes)


@needs_faces_dev
def test_largest_policy_stops_the_scan_above_faces_too_small_to_matter(monkeypatch):
    # Laura's face is ~137 px of a 300 px photo: with `largest` no window under ~1/2 of it can change the choice
    rgb = cv2.resize(photo(LAURA), (300, 300), interpolation=cv2.INTER_CUBIC)
    top_down, smallest = scanned_windows(monkeypatch, rgb, AlignParams(multiple_faces="largest"))
    whole, smallest_whole = scanned_windows(monkeypatch, rgb, AlignParams(multiple_faces="reject"))
    assert smallest_whole == AlignParams().min_face and smallest > 1.5 * smallest_whole
    assert top_down.status == whole.status == "ok"
    assert box_iou(top_down.box, whole.box) > 0.9
    assert math.dist(top_down.left_eye, whole.left_eye) < 2 and math.dist(top_down.right_eye, whole.right_eye) < 2


def test_top_down_scan_goes_on_down_while_no_face_is_verified(monkeypatch):
    blank = np.full((300, 300, 3), 200, np.uint8)
    result, smallest = scanned_windows(monkeypatch, blank, AlignParams(multiple_faces="largest", try_rotations=[]))
    # down to the coarse pyramid's first level at or above min_face (24 px x 1.25^k)
    assert result.reason == "no_face" and AlignParams().min_face <= smallest < 1.25 * AlignParams().min_face


def test_a_frame_scan_stops_above_faces_too_small_beside_another_frames_face(monkeypatch):
    # another frame of the photo holds a verified 200 px face; with dominance 2 this frame's faces under 141 px
    # cannot change the choice, so its scan stops there instead of descending to min_face
    blank = np.full((300, 300, 3), 200, np.uint8)
    params = AlignParams(multiple_faces="largest", dominance=2.0)
    grey = detect.to_grey(blank)
    scan = detect.make_scan(grey, params)
    counting = CountingCascade(detect.load_cascade(detect.FRONTAL_CASCADE))
    monkeypatch.setattr(detect, "load_cascade", lambda name: counting)
    assert policy_candidates(blank, grey, scan, -15.0, params, beside=200.0) == []
    assert min(counting.min_sizes) * detect.fine_step(scan) >= 200.0 / math.sqrt(2.0)
    counting.min_sizes.clear()
    policy_candidates(blank, grey, scan, -15.0, params)
    assert min(counting.min_sizes) < 1.25 * params.min_face


@needs_faces_dev
def test_ok_result_has_a_152_rgb_crop_landmarks_and_methods():
    result = align_face(photo(LAURA), AlignParams())
    assert (result.status, result.reason) == ("ok", "")
    assert result.image.shape == (152, 152, 3) and result.image.dtype == np.uint8
    assert result.eye_method == "haar_eye" and result.nose_method == "geometry"
    assert result.left_eye[0] < result.right_eye[0]
    x, y, w, h = result.box
    for point in (result.left_eye, result.right_eye, result.nose, result.mouth):
        assert x <= point[0] <= x + w and y <= point[1] <= y + h
    assert result.left_eye[1] < result.nose[1] < result.mouth[1]
    row = result.record()
    assert {"box_x", "left_eye_x", "mouth_y", "eye_method", "angle_deg", "blur"} <= set(row) and "image" not in row


def output_eye_error(result: AlignResult, true_left, true_right, cfg: AlignParams) -> float:
    """Worst distance (output px) between where the true eyes land in the crop and the template."""
    from skimage.transform import SimilarityTransform

    template = np.array([cfg.left_eye, cfg.right_eye]) * cfg.size - 0.5
    tform = SimilarityTransform.from_estimate(np.array([result.left_eye, result.right_eye]), template)
    landed = tform(np.array([true_left, true_right]))
    return float(np.linalg.norm(landed - template, axis=1).max())


# The plain first contrast step finds a weak, off-centre box (7 alt2 votes) on Jerry's face turned by 15 degrees in
# the upright frame, so the rotated frames are never scanned and the crop stays tilted; the equalised copy found
# nothing upright and levelled it at +15. On a third of faces-dev turned by +-15 degrees, 91.6 % come out within
# 5 degrees against 92.3 % with `equalize: global` (docs/params.md). Strict: this fails once the case is mended.
JERRY_UPRIGHT_BOX = pytest.mark.xfail(strict=True, reason="a weak upright box keeps the rotated frames unscanned")


@needs_faces_dev
@pytest.mark.parametrize(
    ("name", "angle"),
    [
        (LAURA, 15.0),
        (LAURA, -15.0),
        pytest.param("jerry_seinfeld/train_21.jpg", 15.0, marks=JERRY_UPRIGHT_BOX),
        ("jerry_seinfeld/train_21.jpg", -15.0),
    ],
)
def test_photo_rotated_15_degrees_comes_out_upright(name, angle):
    cfg = AlignParams()
    upright = align_face(photo(name), cfg)
    rotated, turn = rotate(photo(name), angle)
    result = align_face(rotated, cfg)
    assert result.status == "ok"
    # Turning the photo counter-clockwise by `angle` tilts the eye line by -angle (y points down).
    assert abs(result.angle_deg - (upright.angle_deg - angle)) < 5.0
    true_left, true_right = (turn @ (*upright.left_eye, 1.0)), (turn @ (*upright.right_eye, 1.0))
    # 0.15 inter-ocular distances = 6.8 px in the 152 px crop, where the eyes sit 45.6 px apart.
    assert output_eye_error(result, true_left, true_right, cfg) < 0.15 * 0.3 * cfg.size


@needs_faces_dev
def test_most_dev_photos_rotated_15_degrees_come_out_level():
    cfg = AlignParams()
    names = sorted(str(p.relative_to(FACES_DEV)) for p in FACES_DEV.rglob("*.jpg"))[::12]
    errors = []
    for name in names:
        upright = align_face(photo(name), cfg)
        if upright.eye_method != "haar_eye":  # no trustworthy reference angle
            continue
        for angle in (15.0, -15.0):
            result = align_face(rotate(photo(name), angle)[0], cfg)
            errors.append(abs(result.angle_deg - (upright.angle_deg - angle)) if result.status == "ok" else 90.0)
    # All 280 such dev photos x 2 angles: 92 % within 5 degrees, median error 1 degree.
    assert len(errors) >= 30
    assert np.mean(np.array(errors) < 5.0) >= 0.8 and np.median(errors) < 2.0


def test_align_to_landmarks_puts_known_eyes_on_a_custom_template():
    rgb = np.zeros((300, 400, 3), np.uint8)
    left, right = (150.0, 120.0), (230.0, 140.0)
    for x, y in (left, right):
        cv2.circle(rgb, (round(x), round(y)), 4, (255, 255, 255), -1)
    cfg = AlignParams(size=100, left_eye=(0.3, 0.4), right_eye=(0.7, 0.4))
    image, angle, scale = align_to_landmarks(rgb, left, right, cfg)
    assert image.shape == (100, 100, 3) and image.dtype == np.uint8
    assert angle == pytest.approx(math.degrees(math.atan2(20, 80)))
    assert scale == pytest.approx(40 / math.dist(left, right))
    grey = image[:, :, 0].astype(float)
    for half, expected in ((grey[:, :50], (29.5, 39.5)), (grey[:, 50:], (19.5, 39.5))):
        ys, xs = np.nonzero(half > 60)
        weights = half[ys, xs]
        centroid = (np.average(xs, weights=weights), np.average(ys, weights=weights))
        assert math.dist(centroid, expected) < 0.7


def test_align_to_landmarks_refuses_coincident_eyes():
    with pytest.raises(ValueError, match="coincide"):
        align_to_landmarks(np.zeros((50, 50, 3), np.uint8), (10.0, 10.0), (10.0, 10.0), AlignParams())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"eye_method": "cnn"},
        {"eye_method": "geometry", "eyes_required": True},
        {"left_eye": (0.7, 0.35)},
        {"equalize": []},
        {"equalize": ["none", "none"]},
        {"equalize": "histogram"},
    ],
    ids=["method", "required-geometry", "eye-order", "no-contrast-step", "repeated-step", "unknown-step"],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        AlignParams(**kwargs)


@needs_faces_dev
def test_same_bytes_align_to_identical_bytes_in_process_and_in_a_fresh_one():
    path = FACES_DEV / "jerry_seinfeld" / "train_21.jpg"
    first = align_bytes(path.read_bytes(), AlignParams())
    second = align_bytes(path.read_bytes(), AlignParams.model_validate(AlignParams().model_dump()))
    assert first.image.tobytes() == second.image.tobytes()
    assert first.record() == second.record()
    script = (
        "import hashlib, pathlib, sys\n"
        "from pipeline.core.params import AlignParams\nfrom pipeline.faces.align import align_bytes\n"
        "r = align_bytes(pathlib.Path(sys.argv[1]).read_bytes(), AlignParams())\n"
        "print(hashlib.sha256(r.image.tobytes()).hexdigest())\n"
    )
    fresh = subprocess.run([sys.executable, "-c", script, str(path)], cwd=REPO, capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.strip() == hashlib.sha256(first.image.tobytes()).hexdigest()


@needs_faces_dev
def test_12_megapixel_photo_aligns_like_the_original():
    rgb = photo("jerry_seinfeld/train_21.jpg")
    big = cv2.resize(rgb, (3464, 3464), interpolation=cv2.INTER_CUBIC)
    factor = 3464 / rgb.shape[1]
    small_result, big_result = align_face(rgb, AlignParams()), align_bytes(jpeg_bytes(big), AlignParams())
    assert big_result.status == "ok"
    iod = math.dist(small_result.left_eye, small_result.right_eye)
    for a, b in ((small_result.left_eye, big_result.left_eye), (small_result.right_eye, big_result.right_eye)):
        assert math.dist(a, (b[0] / factor, b[1] / factor)) < 0.1 * iod
    assert big_result.scale == pytest.approx(small_result.scale / factor, rel=0.1)


@pytest.mark.parametrize("shape", [(1, 1, 3), (5, 500, 3), (30, 30), (40, 40, 4)], ids=["1px", "strip", "grey", "rgba"])
def test_tiny_or_odd_images_are_rejects_not_crashes(shape):
    assert align_face(np.zeros(shape, np.uint8), AlignParams()).reason == "no_face"


@needs_faces_dev
def test_a_mirrored_view_with_negative_strides_aligns():
    result = align_face(photo(LAURA)[:, ::-1], AlignParams())
    assert result.status == "ok" and result.image.shape == (152, 152, 3)


def test_a_float_image_is_a_caller_error():
    with pytest.raises(ValueError, match="uint8"):
        align_face(np.zeros((50, 50, 3), np.float32), AlignParams())
