"""The `align` stage's engine: raw faces and avatars to aligned crops in a process pool, resumable, deterministic."""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.core.manifest import (
    Journal,
    journal_path,
    previous_rows,
    prune_unreferenced,
    read_manifest,
    write_manifest,
)
from pipeline.core.params import AlignParams, Params, resolved
from pipeline.core.storage import atomic_write_bytes, remove_partials
from pipeline.core.viz import encode_png
from pipeline.faces.align import align_bytes, align_to_landmarks
from pipeline.faces.detect import ImageDecodeError, decode_image
from pipeline.sandbox import traits

TRAIT_COLUMNS = ["gender", "style", *sorted(traits.TRAIT_KEYS)]
POINT_COLUMNS = [f"{p}_{a}" for p in ("left_eye", "right_eye", "nose", "mouth") for a in ("x", "y")]
GEOMETRY_COLUMNS = [
    "box_x",
    "box_y",
    "box_w",
    "box_h",
    *POINT_COLUMNS,
    "eye_method",
    "nose_method",
    "mouth_method",
    "angle_deg",
    "scale",
    "n_faces",
    "n_not_faces",
    "votes",
    "blur",
    "frame_angle_deg",
    "profile",
    "width",
    "height",
]
FACE_COLUMNS = [
    "source_sha256",
    "identity",
    "folder",
    "source",
    "raw_path",
    "dhash",
    "synthetic",
    "synthetic_kind",
    "path",
    "status",
    "reason",
    "detail",
    *GEOMETRY_COLUMNS,
    *TRAIT_COLUMNS,
]
AVATAR_COLUMNS = [
    "source_sha256",
    "key",
    "raw_path",
    "path",
    "status",
    "reason",
    "detail",
    *GEOMETRY_COLUMNS,
    "scale_param",
    "rotation",
    *TRAIT_COLUMNS,
]


# ---- work done in the pool's processes -------------------------------------------------------------------------


def _init_worker() -> None:
    # One OpenCV thread per process: the pool already uses every core, and nested threads only contend.
    cv2.setNumThreads(1)


def align_face_task(task: dict[str, Any], params: AlignParams, raw_dir: str, out_dir: str) -> dict[str, Any]:
    """Align one raw photo and write its crop; every outcome is a row."""
    try:
        data = (Path(raw_dir) / task["raw_path"]).read_bytes()
    except OSError as exc:
        return {**task, "status": "rejected", "reason": "missing_file", "detail": str(exc)}
    result = align_bytes(data, params)
    row = {**task, **result.record()}
    if result.image is not None:
        path = f"{task['folder']}/{task['source_sha256']}.png"
        atomic_write_bytes(Path(out_dir) / path, encode_png(result.image, compression=3))
        row["path"] = path
    return row


def align_avatar_task(task: dict[str, Any], params: AlignParams, raw_dir: str, out_dir: str) -> dict[str, Any]:
    """Align one avatar with the eye positions its renderer used: the same template as the faces, exactly."""
    from pipeline.sandbox.avatar import avatar_landmarks

    spec = traits.make_spec(
        int(task["gender"]),
        int(task["style"]),
        {k: int(task[k]) for k in traits.TRAIT_KEYS},
        int(task["scale_param"]),
        int(task["rotation"]),
    )
    try:
        rgb = decode_image((Path(raw_dir) / task["raw_path"]).read_bytes())
    except (OSError, ImageDecodeError) as exc:
        return {**task, "status": "rejected", "reason": "decode_error", "detail": str(exc)}
    marks = avatar_landmarks(spec)
    image, angle, scale = align_to_landmarks(rgb, marks.left_eye, marks.right_eye, params)
    path = f"{task['source_sha256'][:2]}/{task['source_sha256']}.png"
    atomic_write_bytes(Path(out_dir) / path, encode_png(image, compression=3))
    box = dict(zip(("box_x", "box_y", "box_w", "box_h"), marks.face_box, strict=True))
    points = {
        f"{name}_{axis}": getattr(marks, name)[i]
        for name in ("left_eye", "right_eye", "nose", "mouth")
        for i, axis in enumerate("xy")
    }
    return {
        **task,
        **box,
        **points,
        "status": "ok",
        "reason": "",
        "detail": "",
        "path": path,
        "eye_method": "renderer",
        "nose_method": "renderer",
        "mouth_method": "renderer",
        "angle_deg": angle,
        "scale": scale,
        "n_faces": 1,
        "n_not_faces": 0,
        "votes": -1,
        "blur": math.nan,
        "frame_angle_deg": 0.0,
        "profile": False,
        "width": rgb.shape[1],
        "height": rgb.shape[0],
    }


def _run_chunk(kind: str, chunk: list[dict[str, Any]], params: AlignParams, raw_dir: str, out_dir: str) -> list[dict]:
    work = align_face_task if kind == "faces" else align_avatar_task
    return [work(task, params, raw_dir, out_dir) for task in chunk]


# ---- orchestration -----------------------------------------------------------------------------------------------


@dataclass
class DomainReport:
    """Counts of one domain (faces or avatars) for metrics/align.json."""

    input: int = 0
    aligned: int = 0
    resumed: int = 0
    seconds: float = 0.0
    rejected_by_reason: dict[str, int] | None = None

    def metrics(self) -> dict[str, Any]:
        rate = self.aligned / self.input if self.input else 0.0
        fresh = self.input - self.resumed
        return {
            "input": self.input,
            "aligned": self.aligned,
            "rejected": self.input - self.aligned,
            "rejected_by_reason": self.rejected_by_reason or {},
            "detection_rate": round(rate, 4),
            "images_per_s": round(fresh / self.seconds, 2) if self.seconds and fresh else 0.0,
        }


def face_tasks(manifest: Path) -> list[dict[str, Any]]:
    """One task per saved raw photo, with the columns the aligned manifest carries over."""
    frame = read_manifest(manifest)
    if frame.empty:
        return []
    frame = frame[frame["status"] == "ok"]
    keep = ["identity", "folder", "source", "dhash", "synthetic", "synthetic_kind", *TRAIT_COLUMNS]
    return [
        {"source_sha256": r["sha256"], "raw_path": r["path"], **{k: r.get(k) for k in keep}}
        for r in frame.to_dict("records")
    ]


def avatar_tasks(manifest: Path) -> list[dict[str, Any]]:
    frame = read_manifest(manifest)
    if frame.empty:
        return []
    frame = frame[frame["status"] == "ok"].drop_duplicates("sha256")
    return [
        {
            "source_sha256": r["sha256"],
            "key": r["key"],
            "raw_path": r["path"],
            "scale_param": r["scale"],
            "rotation": r["rotation"],
            **{k: r[k] for k in TRAIT_COLUMNS},
        }
        for r in frame.to_dict("records")
    ]


def _chunks(items: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def align_domain(
    kind: str,
    tasks: list[dict[str, Any]],
    raw_dir: Path,
    out_root: Path,
    params: AlignParams,
    extra_meta: dict[str, Any],
    progress: bool,
) -> DomainReport:
    """Align every task of one domain into `out_root/kind/`, skipping work an earlier run finished."""
    out_dir, manifest = out_root / kind, out_root / f"{kind}.parquet"
    remove_partials(out_dir)
    done = {
        k: r
        for k, r in previous_rows(manifest, "source_sha256").items()
        if r["status"] != "ok" or (out_dir / str(r["path"])).is_file()
    }
    rows = {t["source_sha256"]: {**t, **done[t["source_sha256"]]} for t in tasks if t["source_sha256"] in done}
    pending = [t for t in tasks if t["source_sha256"] not in rows]
    report = DomainReport(input=len(tasks), resumed=len(rows))
    workers = params.workers or os.cpu_count() or 1
    start = time.perf_counter()
    bar = tqdm(total=len(tasks), initial=len(rows), desc=f"align {kind}", unit="img", disable=not progress)
    with Journal(journal_path(manifest)) as journal:
        results: Iterator[list[dict[str, Any]]]
        if workers == 1 or len(pending) <= params.chunk_size:
            _init_worker()
            results = (
                _run_chunk(kind, c, params, str(raw_dir), str(out_dir)) for c in _chunks(pending, params.chunk_size)
            )
            _consume(results, rows, journal, bar)
        else:
            # spawn, not fork: forking a process that runs threads (a sandbox server, icrawler, OpenMP) can copy a
            # held lock into the child and hang it.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
                futures = [
                    pool.submit(_run_chunk, kind, c, params, str(raw_dir), str(out_dir))
                    for c in _chunks(pending, params.chunk_size)
                ]
                _consume((f.result() for f in futures), rows, journal, bar)
    bar.close()
    report.seconds = time.perf_counter() - start
    ordered = [rows[k] for k in sorted(rows)]
    columns = FACE_COLUMNS if kind == "faces" else AVATAR_COLUMNS
    write_manifest(ordered, manifest, columns, {"align": resolved(params), **extra_meta}, nullable_int=TRAIT_COLUMNS)
    Journal(journal_path(manifest)).remove()
    prune_unreferenced(out_dir, {out_dir / str(r["path"]) for r in ordered if r["status"] == "ok"})
    report.aligned = sum(r["status"] == "ok" for r in ordered)
    report.rejected_by_reason = dict(Counter(r["reason"] for r in ordered if r["status"] != "ok").most_common())
    return report


def _consume(
    results: Iterator[list[dict[str, Any]]], rows: dict[str, dict[str, Any]], journal: Journal, bar: Any
) -> None:
    for chunk in results:
        for row in chunk:
            clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            rows[row["source_sha256"]] = clean
            journal.append(clean)
        bar.update(len(chunk))


def run_align(params: Params, progress: bool = True) -> dict[str, Any]:
    """Align the raw faces and avatars named by the crawl sections; returns the metrics of both domains.

    Raises:
        FileNotFoundError: when a crawl manifest is missing (run its crawl stage first).
    """
    out_root = Path(params.align.out_dir)
    metrics: dict[str, Any] = {}
    sources: list[tuple[str, Path, Path, Callable[[Path], list[dict[str, Any]]]]] = [
        ("faces", Path(params.crawl.faces.manifest), Path(params.crawl.faces.out_dir), face_tasks),
        ("avatars", Path(params.crawl.avatars.manifest), Path(params.crawl.avatars.out_dir), avatar_tasks),
    ]
    for kind, manifest, raw_dir, make_tasks in sources:
        if not manifest.exists():
            raise FileNotFoundError(f"{manifest} not found; run `dvc repro crawl_{kind}` first")
        report = align_domain(
            kind,
            make_tasks(manifest),
            raw_dir,
            out_root,
            params.align,
            {"crawl": {kind: resolved(getattr(params.crawl, kind))}},
            progress,
        )
        metrics[kind] = report.metrics()
    metrics["faces"].update(ground_truth_rates(out_root / "faces.parquet", params.align.multiple_faces))
    write_sample_sheet(out_root, Path(params.align.samples), params.align)
    return metrics


def write_sample_sheet(out_root: Path, target: Path, params: AlignParams, per_domain: int = 24) -> None:
    """A picture to check alignment at a glance: aligned faces above aligned avatars, template eyes marked."""
    from pipeline.core.viz import image_grid, save_png

    tiles: list[np.ndarray] = []
    for kind in ("faces", "avatars"):
        frame = pd.read_parquet(out_root / f"{kind}.parquet")
        paths = sorted(frame.loc[frame["status"] == "ok", "path"])[:per_domain]
        for path in paths:
            tile = cv2.cvtColor(cv2.imread(str(out_root / kind / path)), cv2.COLOR_BGR2RGB)
            for fx, fy in (params.left_eye, params.right_eye):  # where every eye should sit
                centre = (round(fx * params.size), round(fy * params.size))
                cv2.drawMarker(tile, centre, (0, 255, 0), cv2.MARKER_CROSS, 9, 1)
            tiles.append(tile)
    if tiles:
        save_png(target, image_grid(tiles, cols=8))


def ground_truth_rates(manifest: Path, policy: str) -> dict[str, float]:
    """On synthetic sandbox photos, how often the outcome matches what was drawn (one face, none, two)."""
    frame = pd.read_parquet(manifest)
    if "synthetic" not in frame or not frame["synthetic"].fillna(False).astype(bool).any():
        return {}
    frame = frame[frame["synthetic"].fillna(False).astype(bool)]
    rates = {}
    # Two faces of about one size are `multiple_faces` under either policy; under "largest" a clearly larger one
    # may be kept instead.
    two_ok = (frame["reason"] == "multiple_faces") | ((frame["status"] == "ok") & (policy == "largest"))
    for kind, good in (
        ("single", frame["status"] == "ok"),
        ("no_face", frame["status"] != "ok"),
        ("two_faces", two_ok),
    ):
        mask = frame["synthetic_kind"] == kind
        if mask.any():
            rates[f"synthetic_{kind}_correct"] = round(float(good[mask].mean()), 4)
    return rates
