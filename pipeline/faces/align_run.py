"""The `align` stage's engine: raw faces and avatars to aligned crops in a process pool, resumable, deterministic."""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import types
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.core.manifest import ResumableOutput, count_reasons, read_manifest
from pipeline.core.params import AlignParams, Params, resolved
from pipeline.core.reuse import canonical_json, code_version, result_key, shaping_params
from pipeline.core.runner import StageError
from pipeline.core.schema import OK, TRAIT_COLUMNS
from pipeline.core.storage import DiskFullError, safe_name
from pipeline.faces.align_tasks import init_worker, run_chunk

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
    "crop_sha256",
    "status",
    "reason",
    "detail",
    *GEOMETRY_COLUMNS,
    *TRAIT_COLUMNS,
    "result_key",
]
AVATAR_COLUMNS = [
    "source_sha256",
    "key",
    "raw_path",
    "path",
    "crop_sha256",
    "status",
    "reason",
    "detail",
    *GEOMETRY_COLUMNS,
    "scale_param",
    "rotation",
    *TRAIT_COLUMNS,
    "result_key",
]
# Params that never change a crop: where results go, and how many processes make them.
NOT_SHAPING = ("out_dir", "metrics", "details", "run_log", "samples", "workers", "chunk_size")


# ---- orchestration -----------------------------------------------------------------------------------------------


@dataclass
class DomainReport:
    """The aligned manifest rows of one domain (faces or avatars), and what this run did to get there."""

    rows: list[dict[str, Any]]
    work: dict[str, Any]

    @property
    def input(self) -> int:
        return len(self.rows)

    @property
    def aligned(self) -> int:
        return sum(r["status"] == OK for r in self.rows)

    def metrics(self) -> dict[str, int]:
        return {"kept": self.aligned, "rejected": self.input - self.aligned}

    def details(self) -> dict[str, Any]:
        return {"input": self.input, "rejected_by_reason": count_reasons(self.rows)}


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
    """Align every task of one domain into `out_root/kind/`, reusing what an earlier run made under the same key.

    A row's key holds its task (the raw file's sha256 and the crawl's columns), every align param that shapes a
    crop, and the code version of this module's imports: changing any of them recomputes the row.
    """
    out_dir = out_root / kind
    code = code_version("pipeline.faces.align_run")
    shaping = shaping_params(resolved(params), NOT_SHAPING)
    for task in tasks:
        task["result_key"] = result_key(canonical_json(task), shaping, code)
    columns = FACE_COLUMNS if kind == "faces" else AVATAR_COLUMNS
    output = ResumableOutput(
        out_root / f"{kind}.parquet", out_dir, "source_sha256", columns, "crop_sha256", TRAIT_COLUMNS
    )
    workers = params.workers or os.cpu_count() or 1
    with output:
        rows: dict[str, dict[str, Any]] = {}
        for task in tasks:
            earlier = output.reusable(task["source_sha256"], task["result_key"], reuse_rejected=True)
            if earlier is not None:
                rows[task["source_sha256"]] = {**earlier, **task}
        pending = [t for t in tasks if t["source_sha256"] not in rows]
        work = {"reused": len(rows), "computed": len(pending)}
        bar = tqdm(total=len(tasks), initial=len(rows), desc=f"align {kind}", unit="img", disable=not progress)
        results: Iterator[list[dict[str, Any]]]
        if workers == 1 or len(pending) <= params.chunk_size:
            init_worker()
            results = (
                run_chunk(kind, c, params, str(raw_dir), str(out_dir)) for c in _chunks(pending, params.chunk_size)
            )
            _consume(results, rows, output, bar)
        else:
            # spawn, not fork: forking a process that runs threads (a sandbox server, icrawler, OpenMP) can copy a
            # held lock into the child and hang it.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context, initializer=init_worker) as pool:
                with _main_hidden():  # the workers start on these submits
                    futures = [
                        pool.submit(run_chunk, kind, c, params, str(raw_dir), str(out_dir))
                        for c in _chunks(pending, params.chunk_size)
                    ]
                try:
                    _consume((f.result() for f in futures), rows, output, bar)
                except BaseException:  # Ctrl-C or a full disk: stop now instead of finishing the queued chunks
                    for future in futures:
                        future.cancel()
                    raise
        bar.close()
        ordered = [rows[k] for k in sorted(rows)]
        work["pruned"] = output.commit(ordered, {"align": resolved(params), **extra_meta})
    return DomainReport(ordered, work)


@contextmanager
def _main_hidden() -> Iterator[None]:
    """Hide the parent's `__main__` from the workers spawned meanwhile.

    A spawned worker first re-imports the module that started the parent (`stages.align`, the `i2c` script, a
    bench) with everything it imports, pandas and pyarrow included: 0.1 s of CPU per worker, to find functions that
    all live in `align_tasks`. Without a `__main__` to copy, the worker imports only what unpickling the tasks needs.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _consume(
    results: Iterator[list[dict[str, Any]]], rows: dict[str, dict[str, Any]], output: ResumableOutput, bar: Any
) -> None:
    for chunk in results:
        for row in chunk:
            clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            rows[row["source_sha256"]] = clean
            output.record(clean)
        bar.update(len(chunk))


@dataclass
class AlignReport:
    """Both domains of one align run."""

    faces: DomainReport
    avatars: DomainReport
    truth: dict[str, float]  # on synthetic photos: how often the outcome matches what was drawn, by kind

    def metrics(self) -> dict[str, Any]:
        """The state of the output, for metrics/align.json: few numbers, so `dvc metrics show` stays narrow."""
        identities = len({r["identity"] for r in self.faces.rows if r["status"] == OK})
        metrics: dict[str, Any] = {"faces": self.faces.metrics(), "avatars": self.avatars.metrics()}
        metrics["identities"] = identities
        if "all" in self.truth:
            metrics["truth"] = self.truth["all"]
        return metrics

    def details(self) -> dict[str, Any]:
        kept = {}
        for row in self.faces.rows:
            if row["status"] == OK:
                kept[safe_name(str(row["identity"]))] = kept.get(safe_name(str(row["identity"])), 0) + 1
        return {
            "faces": self.faces.details(),
            "avatars": self.avatars.details(),
            "synthetic_truth": self.truth,
            "kept_by_identity": dict(sorted(kept.items())),
        }

    def work(self) -> dict[str, Any]:
        return {"faces": self.faces.work, "avatars": self.avatars.work}


def run_align(params: Params, progress: bool = True) -> AlignReport:
    """Align the raw faces and avatars named by the crawl sections.

    Raises:
        FileNotFoundError: when a crawl manifest is missing (run its crawl stage first).
        StageError: when the disk fills up.
    """
    out_root = Path(params.align.out_dir)
    reports: dict[str, DomainReport] = {}
    sources: list[tuple[str, Path, Path, Callable[[Path], list[dict[str, Any]]]]] = [
        ("faces", Path(params.crawl.faces.manifest), Path(params.crawl.faces.out_dir), face_tasks),
        ("avatars", Path(params.crawl.avatars.manifest), Path(params.crawl.avatars.out_dir), avatar_tasks),
    ]
    for kind, manifest, raw_dir, make_tasks in sources:
        if not manifest.exists():
            raise FileNotFoundError(f"{manifest} not found; run `dvc repro crawl_{kind}` first")
        meta = {"crawl": {kind: resolved(getattr(params.crawl, kind))}}
        try:
            tasks = make_tasks(manifest)
            reports[kind] = align_domain(kind, tasks, raw_dir, out_root, params.align, meta, progress)
        except DiskFullError as exc:
            raise StageError(
                f"{exc}; free some space and re-run: the crops made so far are reused, and the earlier manifest "
                "and its crops are unchanged"
            ) from None
    write_sample_sheet(out_root, Path(params.align.samples), params.align)
    rates = ground_truth_rates(out_root / "faces.parquet", params.align.multiple_faces)
    return AlignReport(reports["faces"], reports["avatars"], rates)


def spread_sample(frame: pd.DataFrame, count: int, group: str = "identity") -> list[str]:
    """Up to `count` paths taken round-robin over the groups (identities), so a sheet shows many people."""
    if group not in frame.columns:
        return sorted(frame["path"])[:count]
    ordered = frame.sort_values([group, "path"])
    rank = ordered.groupby(group, sort=False).cumcount()  # 0 for each identity's first photo, 1 for its second, …
    return list(ordered.assign(rank=rank.to_numpy()).sort_values(["rank", group, "path"])["path"][:count])


def write_sample_sheet(out_root: Path, target: Path, params: AlignParams, per_domain: int = 24) -> None:
    """A picture to check alignment at a glance: aligned faces above aligned avatars, template eyes marked."""
    from pipeline.core.viz import image_grid, save_png

    tiles: list[np.ndarray] = []
    for kind in ("faces", "avatars"):
        frame = pd.read_parquet(out_root / f"{kind}.parquet")
        for path in spread_sample(frame[frame["status"] == "ok"], per_domain):
            tile = cv2.cvtColor(cv2.imread(str(out_root / kind / path)), cv2.COLOR_BGR2RGB)
            for fx, fy in (params.left_eye, params.right_eye):  # where every eye should sit
                centre = (round(fx * params.size), round(fy * params.size))
                cv2.drawMarker(tile, centre, (0, 255, 0), cv2.MARKER_CROSS, 9, 1)
            tiles.append(tile)
    if tiles:
        save_png(target, image_grid(tiles, cols=8))


def ground_truth_rates(manifest: Path, policy: str) -> dict[str, float]:
    """On synthetic sandbox photos, how often the outcome matches what was drawn (one face, none, two), and `all`."""
    frame = pd.read_parquet(manifest)
    if "synthetic" not in frame or not frame["synthetic"].fillna(False).astype(bool).any():
        return {}
    frame = frame[frame["synthetic"].fillna(False).astype(bool)]
    right = pd.Series(False, index=frame.index)
    rates = {}
    # Two faces of about one size are `multiple_faces` under either policy; under "largest" a clearly larger one
    # may be kept instead.
    two_ok = (frame["reason"] == "multiple_faces") | ((frame["status"] == OK) & (policy == "largest"))
    for kind, good in (
        ("single", frame["status"] == OK),
        ("no_face", frame["status"] != OK),
        ("two_faces", two_ok),
    ):
        mask = frame["synthetic_kind"] == kind
        right |= mask & good
        if mask.any():
            rates[f"synthetic_{kind}_correct"] = round(float(good[mask].mean()), 4)
    rates["all"] = round(float(right.mean()), 4)
    return rates
