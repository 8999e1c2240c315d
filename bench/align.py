"""Benchmark of the `align` stage: 1 process against all cores, a per-step breakdown, and the downscale speedup."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.core.params import AlignParams
from pipeline.core.storage import atomic_write_bytes
from pipeline.core.viz import encode_png
from pipeline.faces.align import AlignConfig, align_to_landmarks, combine_eyes, find_mouth, geometric_eyes, search_eyes
from pipeline.faces.align_run import DomainReport, align_domain
from pipeline.faces.detect import decode_image, find_face, to_grey
from pipeline.sandbox.photo import encode_jpeg, photo_jpeg_quality, render_photo

IDENTITIES = [f"bench_person_{i:02d}" for i in range(25)]


def make_photos(root: Path, n: int) -> list[dict[str, Any]]:
    """n synthetic sandbox photos as JPEG files, and the align tasks that point at them."""
    tasks = []
    for i in range(n):
        name, index = IDENTITIES[i % len(IDENTITIES)], i // len(IDENTITIES)
        data = encode_jpeg(render_photo(name, index, 0).image, photo_jpeg_quality(name, index, 0))
        path = f"{name}/{i:05d}.jpg"
        atomic_write_bytes(root / path, data)
        tasks.append({"source_sha256": f"{i:064d}", "raw_path": path, "identity": name, "folder": name})
    return tasks


def steps(datas: list[bytes], cfg: AlignConfig) -> dict[str, float]:
    """Milliseconds per photo in each step of align_face, run one after another in this process."""
    cv2.setNumThreads(1)
    totals = dict.fromkeys(("decode", "detect", "landmarks", "warp", "write"), 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        for i, data in enumerate(datas):
            t0 = time.perf_counter()
            rgb = decode_image(data)
            grey = to_grey(rgb)
            t1 = time.perf_counter()
            det = find_face(rgb, cfg.detect, grey)
            t2 = time.perf_counter()
            totals["decode"] += t1 - t0
            totals["detect"] += t2 - t1
            if det.reason or det.box is None:
                continue
            eyes = search_eyes(grey, det.box, det.frame_angle_deg, cfg)
            left, right, _ = combine_eyes(eyes, geometric_eyes(det.box, det.frame_angle_deg, cfg), cfg.eye_method)
            find_mouth(grey, det.box, det.frame_angle_deg, left, right, cfg)
            t3 = time.perf_counter()
            image, _, _ = align_to_landmarks(rgb, left, right, cfg)
            t4 = time.perf_counter()
            atomic_write_bytes(Path(tmp) / f"{i}.png", encode_png(image, compression=3))
            t5 = time.perf_counter()
            totals["landmarks"] += t3 - t2
            totals["warp"] += t4 - t3
            totals["write"] += t5 - t4
    return {k: v * 1000 / len(datas) for k, v in totals.items()}


def downscale_speedup(datas: list[bytes], cfg: AlignConfig, side: int = 4000) -> dict[str, float]:
    """Detection time on photos upscaled to about 12 MP, with and without the downscaled grey copy."""
    cv2.setNumThreads(1)
    big = []
    for data in datas:
        rgb = decode_image(data)
        height = round(side * rgb.shape[0] / rgb.shape[1])
        big.append(cv2.resize(rgb, (side, height), interpolation=cv2.INTER_CUBIC))
    timings = {}
    for label, max_side in (("downscaled", cfg.detect.detect_max_side), ("full", 10**6)):
        detect = dataclasses.replace(cfg.detect, detect_max_side=max_side, try_rotations=())
        start = time.perf_counter()
        for rgb in big:
            find_face(rgb, detect)
        timings[label] = (time.perf_counter() - start) / len(big)
    mp = float(np.mean([b.shape[0] * b.shape[1] for b in big])) / 1e6
    return {
        "megapixels": mp,
        "downscaled_s": timings["downscaled"],
        "full_s": timings["full"],
        "speedup": timings["full"] / timings["downscaled"],
    }


def run(n: int = 500) -> dict[str, Any]:
    """Align the same n photos with 1 process and with every core; the step breakdown and downscale speedup."""
    root = Path(tempfile.mkdtemp(prefix="bench-align-"))
    cores = os.cpu_count() or 1
    try:
        tasks = make_photos(root / "raw", n)
        rows: list[tuple[int, DomainReport, float]] = []
        for workers in (1, cores):
            params = AlignParams(workers=workers, chunk_size=8)
            out = root / f"aligned-{workers}"
            start = time.perf_counter()
            fresh = [dict(t) for t in tasks]
            report = align_domain("faces", fresh, AlignConfig(), root / "raw", out, params, {}, False)
            rows.append((workers, report, time.perf_counter() - start))
        datas = [(root / "raw" / t["raw_path"]).read_bytes() for t in tasks]
        breakdown = steps(datas[:100], AlignConfig())
        large = downscale_speedup(datas[:6], AlignConfig())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    single = rows[0][2]
    table = [
        {"workers": w, "seconds": s, "per_s": r.input / s, "aligned": r.aligned, "efficiency": single / (s * w)}
        for w, r, s in rows
    ]
    return {"n": n, "cores": cores, "rows": table, "steps_ms": breakdown, "large": large}


def align_table(result: dict[str, Any]) -> str:
    """Markdown for bench/results/align.md and README."""
    lines = [
        f"Same {result['n']} synthetic sandbox photos (320-640 px JPEG), `align` defaults, {result['cores']} cores.",
        "",
        "| processes | seconds | photos/s | aligned | parallel efficiency |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['workers']} | {r['seconds']:.1f} | {r['per_s']:.1f} | {r['aligned']} | {r['efficiency']:.0%} |"
        )
    s = result["steps_ms"]
    total = sum(s.values())
    lines += [
        "",
        "Per photo, one process: " + ", ".join(f"{k} {v:.1f} ms ({v / total:.0%})" for k, v in s.items()) + ".",
    ]
    big = result["large"]
    lines.append(
        f"Detection on {big['megapixels']:.1f}-megapixel photos: {big['downscaled_s'] * 1000:.0f} ms with the "
        f"downscaled grey copy vs {big['full_s'] * 1000:.0f} ms at full size ({big['speedup']:.1f}x)."
    )
    return "\n".join(lines) + "\n"
