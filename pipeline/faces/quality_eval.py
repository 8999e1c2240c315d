"""Precision and recall of `align` where the truth is known: sandbox renders, VOC group photos, faces-dev composites.

Each set answers one question of the goal table in README:
- sandbox renders (`pipeline.sandbox.photo`) know every face they drew: are no-face photos rejected, single faces
  aligned, two-face photos handled by the policy, and is every aligned crop on a drawn face?
- the 9 VOC group photos of faces-landmarks have every face annotated: a box `align` would consider that matches
  no annotation is a false face;
- faces-dev photos composed among drawn distractors (`composite`): is the photo's face aligned (one dominant face,
  sometimes with a small background face), and does any crop land on the distractors?
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from pipeline.faces.composite import composite_set, photo_files
from pipeline.faces.detect import Box, box_iou, centre_inside, decode_image
from pipeline.faces.landmark_eval import read_annotations
from pipeline.sandbox.photo import photo_kind, render_photo

VOC_MATCH_IOU = 0.3  # Haar boxes are larger than the hand-drawn ones; the same bar as landmark_eval's eye scoring
SANDBOX_COUNTS = {"single": 300, "no_face": 150, "two_faces": 150}


class Outcome(Protocol):
    """What the checks read from an alignment result (`AlignResult` has it)."""

    status: str
    reason: str
    box: Box | None


Aligner = Callable[[np.ndarray], Outcome]
FaceFinder = Callable[[np.ndarray], list[Box]]


def sandbox_rows(align: Aligner, counts: dict[str, int] | None = None, seed: int = 0) -> pd.DataFrame:
    """Renders photos of synthetic people until each kind has its count; one row per photo and its outcome.

    `on_face` says the aligned box's centre lies in a face the renderer drew. People are named "quality NN", so
    none of them is one of the default crawl's identities.
    """
    wanted = dict(counts or SANDBOX_COUNTS)
    rows = []
    index = 0
    while any(wanted.values()):
        name, photo = f"quality {index % 50:02d}", index // 50
        index += 1
        kind = photo_kind(name, photo, seed)
        if wanted.get(kind, 0) <= 0:
            continue
        wanted[kind] -= 1
        render = render_photo(name, photo, seed)
        result = align(render.image)
        on_face = any(centre_inside(result.box, face.face_box) for face in render.faces)
        rows.append({"name": name, "photo": photo, "kind": kind, "status": result.status, "reason": result.reason,
                     "on_face": bool(result.status == "ok" and on_face)})  # fmt: skip
    return pd.DataFrame(rows)


def voc_rows(find_faces: FaceFinder, root: Path) -> pd.DataFrame:
    """One row per face box `find_faces` returns on the VOC group photos, matched against the annotations."""
    table = read_annotations(root, "voc")
    rows = []
    for file, faces in table.groupby("file", sort=True):
        truth = [(f.x, f.y, f.w, f.h) for f in faces.itertuples(index=False)]
        for box in find_faces(decode_image((Path(root) / file).read_bytes())):
            iou = max(box_iou(box, t) for t in truth)
            rows.append({"file": file, "box_w": box[2], "best_iou": iou, "false_face": iou < VOC_MATCH_IOU})
    return pd.DataFrame(rows, columns=["file", "box_w", "best_iou", "false_face"])


def composite_rows(align: Aligner, root: Path, seed: int = 0, stride: int = 1) -> pd.DataFrame:
    """One row per composite photo: outcome, and whether the crop is the main face, the background one or neither."""
    rows = []
    for composite in composite_set(root, seed, stride):
        result = align(composite.image)
        ok = result.status == "ok"
        on = (
            "main"
            if centre_inside(result.box, composite.main)
            else "background"
            if centre_inside(result.box, composite.background)
            else "none"
        )
        rows.append({"source": composite.source, "background_face": composite.background is not None,
                     "status": result.status, "reason": result.reason, "on": on if ok else ""})  # fmt: skip
    return pd.DataFrame(rows)


def photo_rows(align: Aligner, root: Path) -> pd.DataFrame:
    """The outcome for every photo under `root` as it is (no ground truth: the aligned share and the reasons)."""
    rows = []
    for name in photo_files(root):
        result = align(decode_image((Path(root) / name).read_bytes()))
        rows.append({"source": name, "status": result.status, "reason": result.reason})
    return pd.DataFrame(rows)


def _share(mask: pd.Series) -> float:
    return round(float(mask.mean()), 4) if len(mask) else math.nan


def summarise_quality(
    sandbox: pd.DataFrame | None = None,
    voc: pd.DataFrame | None = None,
    composites: pd.DataFrame | None = None,
    photos: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The goal table's numbers, flat; a set that was not given is left out."""
    out: dict[str, Any] = {}
    if sandbox is not None:
        kind, ok = sandbox["kind"], sandbox["status"] == "ok"
        out["sandbox_no_face_rejected"] = _share(~ok[kind == "no_face"])
        out["sandbox_single_aligned"] = _share(ok[kind == "single"])
        handled = (sandbox["reason"] == "multiple_faces") | (ok & sandbox["on_face"])
        out["sandbox_two_faces_handled"] = _share(handled[kind == "two_faces"])
        out["sandbox_aligned"] = int(ok.sum())
        out["sandbox_false_crops"] = int((ok & ~sandbox["on_face"]).sum())
        out["sandbox_false_crop_share"] = _share(~sandbox.loc[ok, "on_face"])
    if voc is not None:
        out["voc_boxes"] = len(voc)
        out["voc_false_faces"] = int(voc["false_face"].sum())
        out["voc_false_face_share"] = _share(voc["false_face"])
    if composites is not None:
        ok = composites["status"] == "ok"
        out["composite_photos"] = len(composites)
        out["composite_aligned_main"] = _share(composites["on"] == "main")
        back = composites["background_face"]
        out["composite_aligned_main_with_background_face"] = _share((composites["on"] == "main")[back])
        out["composite_aligned"] = int(ok.sum())
        out["composite_false_crops"] = int((composites["on"] == "none").sum())
        out["composite_false_crop_share"] = _share(composites.loc[ok, "on"] == "none")
        out["composite_background_chosen"] = int((composites["on"] == "background").sum())
        out["composite_rejected_by_reason"] = composites.loc[~ok, "reason"].value_counts().to_dict()
    if photos is not None:
        ok = photos["status"] == "ok"
        out["photos"] = len(photos)
        out["photos_aligned"] = _share(ok)
        out["photos_rejected_by_reason"] = photos.loc[~ok, "reason"].value_counts().to_dict()
    return out
