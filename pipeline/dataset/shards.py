"""Pack aligned faces, avatars and letterboxed raw photos into checksummed uint8 .npy shards with an index.parquet."""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.core.manifest import prune_unreferenced, write_manifest
from pipeline.core.params import PackParams, Params, resolved
from pipeline.core.schema import TRAIT_COLUMNS
from pipeline.core.storage import atomic_write_bytes, atomic_write_json, remove_partials
from pipeline.core.viz import letterbox
from pipeline.dataset.splits import ALL_SPLITS, PEOPLE_SPLITS, SplitError, hash_splits, seeded_key, split_faces
from pipeline.faces.detect import ImageDecodeError, decode_image

log = logging.getLogger("img2caricature.pack")

DATASETS = ("faces", "avatars", "photos")
BOX_COLUMNS = ["box_x", "box_y", "box_w", "box_h"]
LETTERBOX_COLUMNS = ["raw_width", "raw_height", "scale_x", "scale_y", "pad_x", "pad_y"]
# Columns every index has, in this order; dataset-specific ones follow.
INDEX_COLUMNS = ["split", "shard", "offset", "shard_sha256", "shard_bytes", "identity", "label", "sha256", "source"]
EXTRA_COLUMNS = {
    "faces": ["folder", "dhash", "cluster", "synthetic", *TRAIT_COLUMNS],
    "photos": ["folder", "dhash", "cluster", "synthetic", *BOX_COLUMNS, *LETTERBOX_COLUMNS, *TRAIT_COLUMNS],
    "avatars": ["key", *TRAIT_COLUMNS],
}
LABELS_FILE = "labels.json"


class PackError(ValueError):
    """The aligned inputs are missing or inconsistent; the message names the file and what to do."""


class PackInputs(NamedTuple):
    """Where `pack` reads: the outputs of `align` (align.out_dir) and `crawl_faces` (crawl.faces.out_dir)."""

    aligned_dir: Path  # faces.parquet, avatars.parquet and the faces/ and avatars/ crops
    raw_faces_dir: Path  # the raw photos that faces.parquet's `raw_path` is relative to


def pack_inputs(params: Params) -> PackInputs:
    """The input folders of `pack`, taken from the sections of the stages that write them."""
    return PackInputs(Path(params.align.out_dir), Path(params.crawl.faces.out_dir))


def split_fractions(params: PackParams) -> tuple[float, float, float]:
    """(train, val, test) shares of every identity (and of the avatars)."""
    return (1.0 - params.val_fraction - params.test_fraction, params.val_fraction, params.test_fraction)


def encode_npy(array: np.ndarray) -> bytes:
    """The .npy bytes of an array: format 1.0, fixed header, data 64-byte aligned, so np.load can mmap it."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), version=(1, 0), allow_pickle=False)
    return buffer.getvalue()


Loader = Callable[[int], tuple[np.ndarray, dict[str, Any]]]


def write_dataset(
    rows: pd.DataFrame, load: Loader, out: Path, shard_size: int, workers: int = 1, progress: bool = False
) -> pd.DataFrame:
    """Write the rows' images as shards `<split>-<id:05d>.npy` under `out`, in row order within each split.

    Args:
        rows: one row per sample with a `split` column, already in the order the shards should hold them.
        load: row position -> (uint8 (H, W, 3) image, extra index columns for that row).
        out: the dataset folder; shard files left there by an earlier, larger run are deleted.
        shard_size: samples per shard.
        workers: decode threads (OpenCV releases the GIL).
        progress: show a progress bar per dataset.

    Returns:
        `rows` ordered by (split, shard, offset) with shard, offset, shard_sha256, shard_bytes and the extras.
    """
    placed, kept_files = [], {out / "index.parquet"}
    chunks = []
    for split in ALL_SPLITS:
        positions = np.flatnonzero((rows["split"] == split).to_numpy())
        starts = range(0, len(positions), shard_size)
        chunks += [(split, i, positions[start : start + shard_size]) for i, start in enumerate(starts)]
    with ThreadPoolExecutor(workers) as pool:
        for split, shard_id, chunk in tqdm(chunks, desc=f"pack {out.name}", unit="shard", disable=not progress):
            loaded = list(pool.map(load, chunk.tolist()))  # map keeps order: same input, same bytes
            shapes = {image.shape for image, _ in loaded}
            if len(shapes) != 1 or next(iter(shapes))[2:] != (3,):
                raise PackError(
                    f"{out.name} {split} shard {shard_id} mixes image shapes {sorted(shapes)}; "
                    "re-run `dvc repro align` so every crop has the same size"
                )
            data = encode_npy(np.stack([image for image, _ in loaded]))
            name = f"{split}-{shard_id:05d}.npy"
            atomic_write_bytes(out / name, data)
            kept_files.add(out / name)
            digest = hashlib.sha256(data).hexdigest()
            for offset, (position, (_, extra)) in enumerate(zip(chunk, loaded, strict=True)):
                where = dict(shard=name, offset=offset, shard_sha256=digest, shard_bytes=len(data))
                placed.append({"position": int(position), **where, **extra})
    prune_unreferenced(out, kept_files)
    table = pd.DataFrame(placed) if placed else pd.DataFrame(columns=["position", *INDEX_COLUMNS[1:5]])
    samples = rows.iloc[table["position"].to_numpy()].reset_index(drop=True)
    return pd.concat([samples, table.drop(columns=["position"])], axis=1)


def read_aligned(aligned_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ok rows of the align stage's face and avatar manifests.

    Raises:
        PackError: when a manifest is missing or lacks a column `pack` needs.
    """
    needs = {
        "faces": ["source_sha256", "identity", "folder", "status", "path", "raw_path", "dhash", *BOX_COLUMNS],
        "avatars": ["source_sha256", "status", "path"],
    }
    frames = []
    for name, columns in needs.items():
        path = aligned_dir / f"{name}.parquet"
        if not path.is_file():
            raise PackError(f"{path} not found; run `dvc repro align` first (or fix pack.aligned_dir)")
        frame = pd.read_parquet(path)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise PackError(f"{path} lacks columns {missing}; re-run `dvc repro align` with this version")
        frames.append(frame[frame["status"] == "ok"].reset_index(drop=True))
    return frames[0], frames[1]


def _crop_loader(folder: Path, rows: pd.DataFrame) -> Loader:
    """Aligned PNG crops, decoded to RGB."""

    def load(i: int) -> tuple[np.ndarray, dict[str, Any]]:
        path = folder / rows["path"].iat[i]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise PackError(f"{path} is missing or unreadable; re-run `dvc repro align`")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), {}

    return load


def _photo_loader(raw_dir: Path, faces: pd.DataFrame, size: int) -> Loader:
    """Raw photos letterboxed to size x size, with the Haar box moved into shard coordinates."""

    def load(i: int) -> tuple[np.ndarray, dict[str, Any]]:
        path = raw_dir / faces["raw_path"].iat[i]
        try:
            # decode_image is what align detected on (EXIF-rotated), so the Haar box fits these pixels
            rgb = decode_image(path.read_bytes())
        except (OSError, ImageDecodeError) as exc:
            raise PackError(f"{path}: {exc}; re-run `dvc repro crawl_faces align`") from None
        image, fit = letterbox(rgb, size)
        box = fit.box(*(float(faces[c].iat[i]) for c in BOX_COLUMNS))
        return image, {**dict(zip(BOX_COLUMNS, box, strict=True)), **asdict(fit)}

    return load


def _ordered(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Seeded order inside a split, so every shard mixes identities (faces and photos share it row for row)."""
    rows = rows.assign(_order=[seeded_key(seed, s) for s in rows["sha256"]])
    return rows.sort_values(["_order", "identity"], kind="stable").drop(columns="_order").reset_index(drop=True)


def _write_index(out: Path, rows: pd.DataFrame, dataset: str, record: dict[str, Any]) -> None:
    columns = INDEX_COLUMNS + EXTRA_COLUMNS[dataset]
    frame = rows.reindex(columns=columns)
    write_manifest(frame.to_dict("records"), out / "index.parquet", columns, record, TRAIT_COLUMNS)


def _jobs(
    params: PackParams, inputs: PackInputs, faces: pd.DataFrame, avatars: pd.DataFrame
) -> dict[str, tuple[pd.DataFrame, Loader]]:
    """The rows of each dataset in shard order, with the loader of their images."""
    faces = _ordered(faces.assign(sha256=faces["source_sha256"], source="faces/" + faces["path"]), params.seed)
    photos = faces.drop(columns=["source", *BOX_COLUMNS]).assign(source=faces["raw_path"])
    avatars = avatars.drop_duplicates("source_sha256")
    splits = hash_splits(list(avatars["source_sha256"]), split_fractions(params), params.seed)
    avatars = avatars.assign(sha256=avatars["source_sha256"], source="avatars/" + avatars["path"], split=splits)
    avatars = _ordered(avatars.assign(label=-1, identity=None), params.seed)
    return {
        "faces": (faces, _crop_loader(inputs.aligned_dir / "faces", faces)),
        "avatars": (avatars, _crop_loader(inputs.aligned_dir / "avatars", avatars)),
        "photos": (photos, _photo_loader(inputs.raw_faces_dir, faces, params.photo_size)),
    }


def pack(params: PackParams, inputs: PackInputs, progress: bool = False) -> dict[str, Any]:
    """Split, shard and index the aligned data under `params.out_dir`; returns every count (`pack_metrics` picks a few).

    Raises:
        PackError: for missing or inconsistent inputs, or when no identity keeps enough faces.
    """
    out_dir = Path(params.out_dir)
    remove_partials(out_dir)
    faces_in, avatars_in = read_aligned(inputs.aligned_dir)
    try:
        split = split_faces(
            faces_in,
            split_fractions(params),
            params.seed,
            params.near_duplicate_distance,
            params.min_faces_per_identity,
            (params.people_val_fraction, params.people_test_fraction),
        )
    except SplitError as exc:
        raise PackError(str(exc)) from None
    for name, why in split.dropped.items():
        log.warning("dropped identity %r: %s", name, why)
    if not split.labels:
        raise PackError(
            f"no identity has {params.min_faces_per_identity} aligned faces; crawl more photos or lower "
            "pack.min_faces_per_identity"
        )
    record = {**resolved(params), **{k: str(v) for k, v in inputs._asdict().items()}}
    metrics: dict[str, Any] = {}
    for dataset, (rows, load) in _jobs(params, inputs, split.frame, avatars_in).items():
        index = write_dataset(rows, load, out_dir / dataset, params.shard_size, params.workers, progress)
        _write_index(out_dir / dataset, index, dataset, record)
        for name in ALL_SPLITS:
            metrics[f"{dataset}_{name}"] = int((index["split"] == name).sum())
        shards = index.drop_duplicates("shard")
        metrics[f"{dataset}_total"], metrics[f"{dataset}_shards"] = len(index), len(shards)
        metrics[f"{dataset}_bytes"] = int(shards["shard_bytes"].sum())
    labels = {str(label): name for name, label in sorted(split.labels.items(), key=lambda kv: kv[1])}
    held = {name: sorted(k for k, v in split.held_out.items() if v == name) for name in PEOPLE_SPLITS}
    labels_file = {"labels": labels, "held_out_people": held, "dropped": split.dropped, "params": record}
    atomic_write_json(out_dir / LABELS_FILE, labels_file)
    metrics.update(
        faces_in=len(faces_in),
        avatars_in=len(avatars_in),
        identities=len(split.labels),
        people_val=len(held["people_val"]),
        people_test=len(held["people_test"]),
        shared_with_held_out=split.shared_with_held_out,
        identities_dropped=len(split.dropped),
        faces_in_dropped_identities=int(faces_in["identity"].isin(split.dropped).sum()),
        duplicate_rows=split.duplicate_rows,
        near_duplicate_clusters=int((split.frame.groupby("cluster").size() > 1).sum()),
        shared_clusters=split.shared_clusters,
        bytes=sum(metrics[f"{d}_bytes"] for d in DATASETS),
    )
    return metrics


def pack_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """The few numbers of metrics/pack.json, from `pack`'s full summary (which goes to the details file): what the
    shards hold, and the face splits an experiment on the fractions or the seed moves."""
    faces = {"kept": summary["faces_total"], "rejected": summary["faces_in"] - summary["faces_total"]}
    faces.update(val=summary["faces_val"], test=summary["faces_test"])
    return {
        "faces": faces,
        "avatars": {"kept": summary["avatars_total"], "rejected": summary["avatars_in"] - summary["avatars_total"]},
        "identities": summary["identities"],
        "held_out_people": {"val": summary["people_val"], "test": summary["people_test"]},
    }
