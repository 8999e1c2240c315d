"""Sample sheets built from the stages' manifests: raw photos, raw avatars, and align's rejects grouped by reason."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.core.params import Params
from pipeline.core.viz import image_grid, letterbox

TILE = 128
KIND_LABELS = {"no_face": "drawn: no face", "two_faces": "drawn: two faces"}


@dataclass(frozen=True)
class Sheet:
    """A picture of a stage's output, with the words that say what it shows."""

    title: str
    caption: str
    image: np.ndarray  # RGB uint8


def thumbnail(path: Path, side: int = TILE, box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """The image letterboxed onto a grey side x side square; `box` (x, y, w, h in image pixels) drawn in red."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path} is missing or not an image; re-run the stage that wrote it")
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if box is not None and all(np.isfinite(box)):
        x, y, w, h = (round(v) for v in box)
        cv2.rectangle(rgb, (x, y), (x + w, y + h), (230, 40, 40), max(2, round(max(rgb.shape[:2]) / 150)))
    return letterbox(rgb, side, fill=235)[0]


def spread(frame: pd.DataFrame, count: int, group: str) -> pd.DataFrame:
    """Up to `count` rows taken round-robin over `group` (each identity's first row, then each one's second, …)."""
    ordered = frame.sort_values([group, "path"]) if group in frame else frame.sort_values("path")
    rank = ordered.groupby(group, sort=False).cumcount() if group in frame else pd.Series(range(len(ordered)))
    return ordered.assign(_rank=rank.to_numpy()).sort_values(["_rank", "path"]).head(count)


def raw_photos(params: Params, root: Path, count: int) -> Sheet | None:
    """What `crawl_faces` saved: photos spread over identities, the sandbox's drawn no-face and two-face ones marked."""
    faces = params.crawl.faces
    if not (root / faces.manifest).is_file():
        return None
    frame = pd.read_parquet(root / faces.manifest)
    saved = frame[frame["status"] == "ok"]
    if saved.empty:
        return None
    rows = spread(saved, count, "identity")
    tiles = [thumbnail(root / faces.out_dir / path) for path in rows["path"]]
    kinds = rows["synthetic_kind"] if "synthetic_kind" in rows else pd.Series([None] * len(rows))
    labels = [KIND_LABELS.get(str(kind), "") for kind in kinds]
    caption = (
        f"{len(tiles)} of the {len(saved)} photos of {saved['identity'].nunique()} identities that crawl_faces saved, "
        "one per identity in turn."
    )
    return Sheet("Crawled photos", caption, image_grid(tiles, cols=8, labels=labels))


def raw_avatars(params: Params, root: Path, count: int) -> Sheet | None:
    """What `crawl_avatars` saved, in content-hash order (a random-looking, stable draw)."""
    avatars = params.crawl.avatars
    if not (root / avatars.manifest).is_file():
        return None
    frame = pd.read_parquet(root / avatars.manifest)
    saved = frame[frame["status"] == "ok"].sort_values("path")
    if saved.empty:
        return None
    tiles = [thumbnail(root / avatars.out_dir / path, side=96) for path in saved["path"].head(count)]
    caption = f"{len(tiles)} of the {len(saved)} avatars that crawl_avatars saved."
    return Sheet("Crawled avatars", caption, image_grid(tiles, cols=12))


def _label_tile(text: list[str], side: int = TILE) -> np.ndarray:
    tile = np.full((side, side, 3), 255, np.uint8)
    for i, line in enumerate(text):
        cv2.putText(tile, line, (4, 24 + 22 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (20, 20, 20), 1, cv2.LINE_AA)
    return tile


def align_rejects(params: Params, root: Path, count: int) -> Sheet | None:
    """The photos `align` rejected, a row per reason (most frequent first), the Haar box in red where it found one."""
    manifest = root / params.align.out_dir / "faces.parquet"
    if not manifest.is_file():
        return None
    frame = pd.read_parquet(manifest)
    rejected = frame[frame["status"] != "ok"]
    if rejected.empty:
        return None
    per_row = min(7, count)
    tiles: list[np.ndarray] = []
    reasons = rejected["reason"].value_counts()
    for reason, total in reasons.items():
        rows = spread(rejected[rejected["reason"] == reason], per_row, "identity")
        tiles.append(_label_tile([str(reason), f"{total} photo{'s' * (total != 1)}"]))
        for row in rows.itertuples():
            box = (row.box_x, row.box_y, row.box_w, row.box_h) if "box_x" in rejected else None
            tiles.append(thumbnail(root / params.crawl.faces.out_dir / row.raw_path, box=box))
        tiles += [np.full((TILE, TILE, 3), 255, np.uint8)] * (per_row - len(rows))
    caption = (
        f"{len(rejected)} of {len(frame)} photos rejected by align, up to {per_row} per reason; "
        "red: the face box Haar found, where it found one."
    )
    return Sheet("Rejected photos, by reason", caption, image_grid(tiles, cols=per_row + 1))


# Which sheets belong to which stage; a sheet is drawn only when its stage is in dvc.yaml and its inputs exist.
SHEETS: dict[str, tuple[Callable[[Params, Path, int], Sheet | None], ...]] = {
    "crawl_faces": (raw_photos,),
    "crawl_avatars": (raw_avatars,),
    "align": (align_rejects,),
}
