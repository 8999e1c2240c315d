"""Benchmark of the `align` stage: throughput (wall and CPU) per setting, and where one photo's time goes."""

from __future__ import annotations

import functools
import os
import resource
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.core.params import AlignParams
from pipeline.core.storage import atomic_write_bytes
from pipeline.core.viz import encode_png
from pipeline.faces import align as align_module
from pipeline.faces.align import align_bytes
from pipeline.faces.align_run import align_domain
from pipeline.faces.detect import decode_image, detect_faces
from pipeline.sandbox.photo import encode_jpeg, photo_jpeg_quality, render_photo

IDENTITIES = [f"bench_person_{i:02d}" for i in range(25)]
# Settings compared on the same photos: the defaults, and each saving or check undone on its own.
SETTINGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "equalize: global (before issue 26)": {"equalize": "global"},
    "verify: false": {"verify": False},
    "min_face: 24 (scan from the 24 px window)": {"min_face": 24},
}


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


def _cpu_seconds() -> float:
    """User + system CPU of this process and of its finished children (the pool's workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def throughput(tasks: list[dict[str, Any]], root: Path, params: AlignParams, label: str) -> dict[str, Any]:
    """One `align_domain` run over the tasks: wall seconds, CPU seconds (all processes) and what came out."""
    out = root / f"aligned-{len(os.listdir(root))}"
    wall, cpu = time.perf_counter(), _cpu_seconds()
    # align_domain writes each task's result key into it, so every run gets its own copies
    report = align_domain("faces", [dict(t) for t in tasks], root / "raw", out, params, {}, False)
    wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    shutil.rmtree(out, ignore_errors=True)
    return {"setting": label, "workers": params.workers, "seconds": wall, "cpu_s": cpu, "per_s": len(tasks) / wall,
            "cpu_ms": cpu * 1000 / len(tasks), "aligned": report.aligned,
            "rejected": report.details()["rejected_by_reason"]}  # fmt: skip


# The functions of `pipeline.faces.align` whose time the breakdown reports, each under a step name; a step's time
# excludes the steps it calls (verification's eye search is "eyes").
STEPS: dict[str, Callable[..., str]] = {
    "decode_image": lambda *a: "decode",
    "scan_frame": lambda scan, angle: "scan upright" if angle == 0.0 else "scan rotated",
    "scan_top_down": lambda scan, angle, *rest: "scan upright" if angle == 0.0 else "scan rotated",
    "profile_fires": lambda *a: "profile",
    "check_box": lambda *a: "verify",
    "search_eyes": lambda *a: "eyes",
    "blur_score": lambda *a: "blur",
    "align_to_landmarks": lambda *a: "warp",
}


@contextmanager
def timed_steps(totals: dict[str, float]) -> Iterator[None]:
    """Wraps the STEPS functions in `pipeline.faces.align` so their exclusive CPU time adds up in `totals`."""
    stack: list[list[float]] = []  # [start, time spent in nested steps]
    originals = {name: getattr(align_module, name) for name in STEPS}

    def wrap(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            stack.append([time.process_time(), 0.0])
            try:
                return func(*args, **kwargs)
            finally:
                start, nested = stack.pop()
                spent = time.process_time() - start
                totals[STEPS[name](*args)] += spent - nested
                if stack:
                    stack[-1][1] += spent

        return timed

    try:
        for name, func in originals.items():
            setattr(align_module, name, wrap(name, func))
        yield
    finally:
        for name, func in originals.items():
            setattr(align_module, name, func)


def steps(datas: list[bytes], params: AlignParams) -> dict[str, float]:
    """CPU milliseconds per photo in each step of `align_bytes` + the PNG write, in this process, one thread."""
    cv2.setNumThreads(1)
    totals: dict[str, float] = defaultdict(float)
    with tempfile.TemporaryDirectory() as tmp, timed_steps(totals):
        for i, data in enumerate(datas):
            start = time.process_time()
            result = align_bytes(data, params)
            totals["all"] += time.process_time() - start
            if result.image is not None:
                start = time.process_time()
                atomic_write_bytes(Path(tmp) / f"{i}.png", encode_png(result.image, compression=3))
                totals["write"] += time.process_time() - start
    named = sum(v for k, v in totals.items() if k not in ("all", "write"))
    totals["other"] = totals.pop("all") - named
    return {k: v * 1000 / len(datas) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def downscale_speedup(datas: list[bytes], params: AlignParams, side: int = 4000) -> dict[str, float]:
    """Upright scan time on photos upscaled to about 12 MP, with and without the downscaled grey copy."""
    cv2.setNumThreads(1)
    big = []
    for data in datas:
        rgb = decode_image(data)
        big.append(cv2.resize(rgb, (side, round(side * rgb.shape[0] / rgb.shape[1])), interpolation=cv2.INTER_CUBIC))
    timings = {}
    for label, max_side in (("downscaled", params.detect_max_side), ("full", 8192)):
        scan_params = params.model_copy(update={"detect_max_side": max_side})
        start = time.process_time()
        for rgb in big:
            detect_faces(rgb, scan_params)
        timings[label] = (time.process_time() - start) / len(big)
    mp = float(np.mean([b.shape[0] * b.shape[1] for b in big])) / 1e6
    return {"megapixels": mp, "downscaled_s": timings["downscaled"], "full_s": timings["full"],
            "speedup": timings["full"] / timings["downscaled"]}  # fmt: skip


def run(n: int = 500) -> dict[str, Any]:
    """Align the same n photos with every core under each setting (defaults also with 1 process), then the steps."""
    root = Path(tempfile.mkdtemp(prefix="bench-align-"))
    cores = os.cpu_count() or 1
    try:
        tasks = make_photos(root / "raw", n)
        rows = [throughput(tasks, root, AlignParams(workers=1, chunk_size=8), "defaults")]
        for label, update in SETTINGS.items():
            rows.append(throughput(tasks, root, AlignParams(workers=cores, chunk_size=8, **update), label))
        datas = [(root / "raw" / t["raw_path"]).read_bytes() for t in tasks]
        breakdown = steps(datas[:100], AlignParams())
        large = downscale_speedup(datas[:6], AlignParams())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"n": n, "cores": cores, "rows": rows, "steps_ms": breakdown, "large": large,
            "load": os.getloadavg()[0]}  # fmt: skip


def align_table(result: dict[str, Any]) -> str:
    """Markdown for bench/results/align.md and README."""
    lines = [
        f"Same {result['n']} synthetic sandbox photos (320-640 px JPEG), {result['cores']} cores; CPU is user + system "
        f"time of every process, so it holds up when other work shares the machine (1-minute load average at the end: "
        f"{result['load']:.1f}).",
        "",
        "| setting | processes | seconds | photos/s | CPU ms per photo | aligned | rejected |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        rejected = ", ".join(f"{k} {v}" for k, v in r["rejected"].items())
        lines.append(
            f"| {r['setting']} | {r['workers']} | {r['seconds']:.1f} | {r['per_s']:.1f} | {r['cpu_ms']:.0f} | "
            f"{r['aligned']} | {rejected} |"
        )
    s = result["steps_ms"]
    total = sum(s.values())
    lines += [
        "",
        f"CPU per photo, one process, defaults ({total:.0f} ms): "
        + ", ".join(f"{k} {v:.1f} ms ({v / total:.0%})" for k, v in s.items())
        + ".",
    ]
    big = result["large"]
    lines.append(
        f"Upright scan of {big['megapixels']:.1f}-megapixel photos: {big['downscaled_s'] * 1000:.0f} ms CPU with the "
        f"downscaled grey copy vs {big['full_s'] * 1000:.0f} ms at full size ({big['speedup']:.1f}x)."
    )
    return "\n".join(lines) + "\n"
