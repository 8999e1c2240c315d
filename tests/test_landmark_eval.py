"""Detection recall and eye error on the real faces-landmarks set, against thresholds measured on it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.core.params import AlignParams
from pipeline.faces.detect import box_iou
from pipeline.faces.landmark_eval import (
    landmark_figures,
    landmark_rows,
    read_annotations,
    write_landmark_rows,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LANDMARKS = DATA / "faces-landmarks"
needs_landmarks = pytest.mark.skipif(not LANDMARKS.is_dir(), reason=f"ground-truth set not found at {LANDMARKS}")


@pytest.fixture(scope="module")
def metrics() -> dict:
    # Every 2nd image per subset (300 LFW + 5 VOC photos, 325 faces) keeps this near 25 s on a loaded 2-core box.
    # min_face 24 scans down to the cascade's native window: align keeps no face under min_face (40), but the
    # detector's own recall is scored on every annotated face, some VOC ones as small as 37 px.
    return landmark_figures(landmark_rows(LANDMARKS, AlignParams(min_face=24), stride=2))


# Measured with the default AlignParams on this sample (full set in brackets):
#   recall IoU>=0.5 0.788 (0.793), IoU>=0.3 0.978 (0.977), centre within 0.5 IOD 0.963 (0.967);
#   LFW eye NME median / p90: haar 0.033 / 0.087 (0.034 / 0.094), geometry 0.082 / 0.152, blend 0.048 / 0.102.
# Each bound sits a little below (or above, for errors) what was measured.
@needs_landmarks
def test_detection_recall_on_the_real_set(metrics):
    assert metrics["n_faces"] == 325
    assert metrics["recall_iou50"] >= 0.75
    assert metrics["recall_iou30"] >= 0.95
    assert metrics["recall_centre"] >= 0.93
    # 21 of these 25 group-photo faces (22 on a globally equalised copy; of all 43, both find 38)
    assert metrics["subsets"]["voc"]["recall_iou30"] >= 0.8


@needs_landmarks
def test_verification_keeps_nearly_every_real_face(metrics):
    # Measured: 0.785 of 0.788 at IoU 0.5 on this sample (0.792 of 0.793 on the full set): the few faces it turns
    # down have neither an eye the cascades find nor skin below the eyes (grey photos, hands over the face).
    assert metrics["recall_iou50_verified"] >= metrics["recall_iou50"] - 0.03
    assert metrics["recall_iou50_verified"] >= 0.74


@needs_landmarks
def test_haar_eyes_are_accurate_on_lfw(metrics):
    lfw = metrics["subsets"]["lfw"]
    assert lfw["n_eyes_scored"] >= 290
    assert lfw["haar_both_eyes_rate"] >= 0.85
    assert lfw["nme_haar_median"] <= 0.04
    assert lfw["nme_haar_p90"] <= 0.11


@needs_landmarks
def test_haar_eyes_beat_the_geometric_and_blended_fallbacks(metrics):
    # This ordering is why eye_method defaults to "haar".
    lfw = metrics["subsets"]["lfw"]
    assert lfw["nme_haar_median"] < 0.6 * lfw["nme_geometry_median"]
    assert lfw["nme_haar_median"] < lfw["nme_blend_median"] < lfw["nme_geometry_median"]
    assert lfw["nme_haar_p90"] < lfw["nme_geometry_p90"]


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0


def test_read_annotations_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"annotations\.csv"):
        read_annotations(tmp_path)
    pd.DataFrame({"file": ["images/x/a.jpg"], "x": [1]}).to_csv(tmp_path / "annotations.csv", index=False)
    with pytest.raises(ValueError, match="left_eye_x"):
        read_annotations(tmp_path)


def test_a_set_with_no_detectable_face_scores_zero_without_crashing(tmp_path):
    (tmp_path / "images" / "blank").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "images" / "blank" / "a.png"), np.full((120, 120, 3), 90, np.uint8))
    row = {"file": "images/blank/a.png", "x": 30, "y": 30, "w": 60, "h": 60,
           "left_eye_x": 45, "left_eye_y": 50, "right_eye_x": 75, "right_eye_y": 50}  # fmt: skip
    pd.DataFrame([row]).to_csv(tmp_path / "annotations.csv", index=False)
    rows = landmark_rows(tmp_path, AlignParams())
    result = landmark_figures(rows)
    assert (result["n_faces"], result["recall_iou30"], result["n_eyes_scored"]) == (1, 0.0, 0)
    assert result["subsets"]["blank"]["recall_centre"] == 0.0
    write_landmark_rows(rows, tmp_path / "out" / "rows.parquet")
    assert pd.read_parquet(tmp_path / "out" / "rows.parquet")["file"].tolist() == ["images/blank/a.png"]
