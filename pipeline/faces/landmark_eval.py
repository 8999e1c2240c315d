"""Scores Haar face detection and eye localisation against a folder of ground-truth boxes and eye centres."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.params import AlignParams
from pipeline.faces.align import EYE_METHODS, check_box, combine_eyes
from pipeline.faces.detect import box_iou, decode_image, make_scan, scan_frame, to_grey
from pipeline.faces.eyes import geometric_eyes, search_eyes

ANNOTATION_COLUMNS = ("file", "x", "y", "w", "h", "left_eye_x", "left_eye_y", "right_eye_x", "right_eye_y")
MATCH_IOU = 0.3  # a detection this close to the truth is "the" face whose eyes are scored
CENTRE_TOLERANCE = 0.5  # centre-hit radius in inter-ocular distances (the IoU-free criterion)


def read_annotations(root: Path, subset: str | None = None) -> pd.DataFrame:
    """`annotations.csv` with a `subset` column (the folder under images/), optionally filtered to one subset.

    Raises:
        FileNotFoundError: when `root` has no annotations.csv.
        ValueError: when columns are missing or the subset has no rows.
    """
    path = Path(root) / "annotations.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: point root at a folder with annotations.csv and images/")
    table = pd.read_csv(path)
    missing = sorted(set(ANNOTATION_COLUMNS) - set(table.columns))
    if missing:
        raise ValueError(f"{path} lacks columns {missing}; expected {list(ANNOTATION_COLUMNS)}")
    table["subset"] = table["file"].str.split("/").str[1]
    if subset is not None:
        table = table[table["subset"] == subset]
        if table.empty:
            raise ValueError(f"subset={subset!r} has no rows in {path}")
    return table.reset_index(drop=True)


def _nme(pred: tuple, truth: tuple, iod: float) -> float:
    """Mean eye-centre error over both eyes, in inter-ocular distances."""
    return (math.dist(pred[0], truth[0]) + math.dist(pred[1], truth[1])) / 2 / iod


def landmark_rows(root: Path, params: AlignParams, subset: str | None = None, stride: int = 1) -> pd.DataFrame:
    """One row per annotated face: detection overlap, centre distance and eye error for every eye method.

    Detection is scored on all upright frontal Haar boxes, and again on those that pass verification
    (`best_iou_verified`), so a photo's other people neither help nor hurt. Eyes are scored on the detection
    with the best IoU when it reaches MATCH_IOU, with the same search `align_face` runs, so the reject policy
    (e.g. a second face at the edge) does not hide errors.
    `stride` keeps every stride-th image of each subset in file-name order, for a quicker fixed sample.
    """
    if stride < 1:
        raise ValueError(f"stride={stride!r}: must be a positive integer")
    table = read_annotations(root, subset)
    files = table.drop_duplicates("file").sort_values("file").groupby("subset")["file"]
    kept = set(files.apply(lambda names: list(names.iloc[::stride])).explode())
    rows = []
    for file, faces in table[table["file"].isin(kept)].groupby("file", sort=True):
        rgb = decode_image((Path(root) / file).read_bytes())
        grey = to_grey(rgb)
        found = scan_frame(make_scan(grey, params), 0.0)
        boxes = [box for box, _ in found]
        verified = [c.box for c in (check_box(rgb, grey, box, conf, 0.0, params) for box, conf in found) if c.face]
        for face in faces.itertuples(index=False):
            truth_box = (face.x, face.y, face.w, face.h)
            truth_eyes = ((face.left_eye_x, face.left_eye_y), (face.right_eye_x, face.right_eye_y))
            iod = math.dist(*truth_eyes)
            centre = (face.x + face.w / 2, face.y + face.h / 2)
            ious = [box_iou(b, truth_box) for b in boxes]
            centre_dists = [math.dist((b[0] + b[2] / 2, b[1] + b[3] / 2), centre) / iod for b in boxes]
            row = {"file": file, "subset": face.subset, "iod": iod, "n_detections": len(boxes),
                   "best_iou": max(ious, default=0.0), "centre_dist": min(centre_dists, default=math.inf),
                   "best_iou_verified": max((box_iou(b, truth_box) for b in verified), default=0.0)}  # fmt: skip
            matched = row["best_iou"] >= MATCH_IOU
            row["matched"] = matched
            if matched:
                box = boxes[int(np.argmax(ious))]
                haar = search_eyes(grey, box, 0.0)
                geometric = geometric_eyes(box, 0.0)
                row["haar_eyes_found"] = sum(e is not None for e in haar)
                for method in EYE_METHODS:
                    left, right, label = combine_eyes(haar, geometric, method)
                    row[f"nme_{method}"] = _nme((left, right), truth_eyes, iod)
                    row[f"label_{method}"] = label
            rows.append(row)
    return pd.DataFrame(rows)


def summarise(rows: pd.DataFrame) -> dict[str, float | int]:
    """Flat metrics for one set of `landmark_rows`: recalls, median IoU, NME median/p90 per eye method."""
    matched = rows[rows["matched"]] if "matched" in rows else rows.iloc[:0]
    out: dict[str, float | int] = {
        "n_images": int(rows["file"].nunique()),
        "n_faces": len(rows),
        "recall_iou50": float((rows["best_iou"] >= 0.5).mean()),
        "recall_iou30": float((rows["best_iou"] >= 0.3).mean()),
        "recall_iou50_verified": float((rows["best_iou_verified"] >= 0.5).mean()),
        "recall_centre": float((rows["centre_dist"] <= CENTRE_TOLERANCE).mean()),
        "median_best_iou": float(rows["best_iou"].median()),
        "n_eyes_scored": len(matched),
    }
    if len(matched):
        out["haar_both_eyes_rate"] = float((matched["haar_eyes_found"] == 2).mean())
        both = matched[matched["haar_eyes_found"] == 2]
        for method in EYE_METHODS:
            errors = matched[f"nme_{method}"]
            out[f"nme_{method}_median"] = float(errors.median())
            out[f"nme_{method}_p90"] = float(errors.quantile(0.9))
            out[f"nme_{method}_mean"] = float(errors.mean())
        if len(both):  # the cascades' own accuracy, without the faces where geometry stood in
            out["nme_haar_both_found_median"] = float(both["nme_haar"].median())
            out["nme_haar_both_found_p90"] = float(both["nme_haar"].quantile(0.9))
    return out


def landmark_figures(rows: pd.DataFrame) -> dict:
    """Detection recall (IoU >= 0.5, >= 0.3, centre within 0.5 IOD) and eye NME of `landmark_rows`: `summarise` of all
    faces, plus "subsets": {name: summarise(rows of that subset)}."""
    result: dict = summarise(rows)
    result["subsets"] = {name: summarise(part) for name, part in rows.groupby("subset", sort=True)}
    return result


def write_landmark_rows(rows: pd.DataFrame, path: Path) -> None:
    """Writes per-face rows as parquet (or CSV when the suffix is .csv), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".csv":
        rows.to_csv(tmp, index=False)
    else:
        rows.to_parquet(tmp, index=False)
    tmp.replace(path)
