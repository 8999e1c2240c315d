"""Benchmark: the shard loader vs an ImageFolder-style PNG pipeline vs a plain memory copy, on the same images."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from pipeline.core.manifest import write_manifest
from pipeline.dataset.loader import ShardDataset, ShardStream, forget_verified, make_loader, to_model_input
from pipeline.dataset.shards import write_dataset

SIDE = 152


def make_images(root: Path, n: int, seed: int = 0) -> list[Path]:
    """n aligned-looking 152x152 PNGs: a lit gradient, a skin-toned face ellipse, eyes, mouth, hair and sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32) / SIDE
    paths = []
    for i in range(n):
        base = rng.uniform(40, 200, 3).astype(np.float32)
        image = base + 60 * (xx[..., None] * rng.uniform(-1, 1) + yy[..., None] * rng.uniform(-1, 1))
        skin = tuple(float(v) for v in rng.uniform(90, 230, 3))
        cv2.ellipse(image, (76, 80), (int(rng.integers(40, 55)), int(rng.integers(52, 66))), 0, 0, 360, skin, -1)
        cv2.ellipse(image, (76, 30), (60, 28), 0, 180, 360, tuple(float(v) for v in rng.uniform(0, 120, 3)), -1)
        for x in (53, 99):
            cv2.circle(image, (x, 62), int(rng.integers(4, 8)), (30, 30, 30), -1)
        cv2.ellipse(image, (76, 112), (int(rng.integers(10, 22)), 6), 0, 0, 180, (120, 40, 50), 3)
        image = cv2.GaussianBlur(image, (3, 3), 0) + rng.normal(0, 4, image.shape).astype(np.float32)
        path = root / f"{i:05d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(np.clip(image, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def pack_images(paths: list[Path], out: Path, shard_size: int = 100) -> float:
    """Pack the PNGs into train shards with the pipeline's own writer; returns seconds."""
    start = time.perf_counter()
    rows = pd.DataFrame({"split": "train", "label": 0, "source": [p.name for p in paths]})

    def load(i: int) -> tuple[np.ndarray, dict[str, Any]]:
        return cv2.cvtColor(cv2.imread(str(paths[i])), cv2.COLOR_BGR2RGB), {}

    index = write_dataset(rows, load, out, shard_size, workers=os.cpu_count() or 1)
    write_manifest(index.to_dict("records"), out / "index.parquet", list(index.columns), {})
    return time.perf_counter() - start


class PngFolder(Dataset):
    """The ImageFolder recipe without torchvision: PIL open, decode, resize, to a float CHW tensor, per file."""

    def __init__(self, paths: list[Path], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[i]) as image:
            rgb = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float().div(255), 0  # (3, S, S)


def _best_epoch(make: Any, repeats: int, transform: Any = None) -> tuple[float, int]:
    """Fastest of `repeats` epochs after one warm-up epoch: other processes on a shared machine only add time."""
    times = []
    for _ in range(repeats + 1):
        start, count = time.perf_counter(), 0
        for batch in make():
            images = batch["image"] if isinstance(batch, dict) else batch[0]
            if transform is not None:
                images = transform(images)
            count += len(images)
        times.append(time.perf_counter() - start)
    return min(times[1:]), count


def _row(method: str, workers: int, seconds: float, count: int, bytes_per_image: int) -> dict[str, Any]:
    return {
        "method": method,
        "workers": workers,
        "seconds": seconds,
        "per_s": count / seconds,
        "mb_s": count * bytes_per_image / seconds / 1e6,
    }


def run(n: int = 5000, batch_size: int = 100, size: int = 128, repeats: int = 5) -> dict[str, Any]:
    """Time each method over the same n images: the best of `repeats` epochs after a warm-up (PNG baseline: 1)."""
    nbytes = SIDE * SIDE * 3

    def resize(images: torch.Tensor) -> torch.Tensor:
        return to_model_input(images, size)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        root = Path(tmp)
        (root / "png").mkdir()
        paths = make_images(root / "png", n)
        png_mb = sum(p.stat().st_size for p in paths) / 1e6
        pack_s = pack_images(paths, root / "shards")
        forget_verified()  # time the first open as a fresh process sees it
        start = time.perf_counter()
        dataset = ShardDataset(root / "shards", "train")
        verify_s = time.perf_counter() - start
        folder = PngFolder(paths, size)
        cases = [
            (f"shards, uint8 batches, {order}", w, partial(make_loader, ShardStream(dataset, batch_size, shuffle), w),
             None, repeats)
            for order, shuffle in (("sequential", False), ("shuffled", True)) for w in (0, 2)
        ] + [
            (f"shards + to_model_input({size}) on CPU, shuffled", w,
             partial(make_loader, ShardStream(dataset, batch_size), w), resize, repeats)
            for w in (0, 2)
        ] + [
            (f"ImageFolder-style PNG -> PIL resize({size}) -> tensor", w,
             partial(DataLoader, folder, batch_size=batch_size, shuffle=True, num_workers=w), None, 1)
            for w in (0, 2)
        ]  # fmt: skip
        threads = torch.get_num_threads()
        for method, workers, loader, transform, times in cases:
            # Per-image tensor ops gain nothing from intra-op threads and stall when other processes hold the
            # cores, so the baseline runs single-threaded, as DataLoader workers do: its best case.
            torch.set_num_threads(1 if method.startswith("ImageFolder") else threads)
            seconds, count = _best_epoch(loader, times, transform)
            rows.append(_row(method, workers, seconds, count, nbytes))
        torch.set_num_threads(threads)
        source = np.concatenate([np.load(root / "shards" / f) for f in dataset.shard_files])
        target = np.empty_like(source)
        copies = []
        for _ in range(repeats):
            start = time.perf_counter()
            np.copyto(target, source)
            copies.append(time.perf_counter() - start)
        rows.append(_row("memory bandwidth: one numpy copy of the same bytes", 0, min(copies), n, nbytes))
    return {
        "n": n,
        "batch_size": batch_size,
        "size": size,
        "cores": os.cpu_count(),
        "rows": rows,
        "pack_s": pack_s,
        "verify_s": verify_s,
        "png_mb": png_mb,
        "shard_mb": n * nbytes / 1e6,
        "torch_threads": torch.get_num_threads(),
        "repeats": repeats,
        "load_avg": os.getloadavg()[0],  # other processes on the machine during the run
    }


def loader_table(result: dict[str, Any]) -> str:
    """Markdown table for README/bench results."""
    rows = result["rows"]
    copy = next(r for r in rows if r["method"].startswith("memory"))
    baseline = max((r for r in rows if r["method"].startswith("ImageFolder")), key=lambda r: r["per_s"])
    lines = [
        f"Epochs over the same {result['n']} aligned {SIDE}x{SIDE} PNGs ({result['png_mb']:.0f} MB as PNG, "
        f"{result['shard_mb']:.0f} MB as shards), batch {result['batch_size']}, {result['cores']} cores, warm page "
        f"cache; each row is the best of {result['repeats']} epochs after a warm-up epoch (the PNG baseline: of 1), "
        f"{platform.python_implementation()} {platform.python_version()}, torch {torch.__version__}, {date.today()}; "
        f"1-minute load average {result['load_avg']:.1f} at the end.",
        "",
        "| method | workers | s | img/s | MB/s (uint8) | vs best ImageFolder row | of copy bandwidth |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r['per_s'] / baseline['per_s']:.1f}x" if r is not copy else ""
        lines.append(
            f"| {r['method']} | {r['workers']} | {r['seconds']:.3f} | {r['per_s']:,.0f} | {r['mb_s']:,.0f} | "
            f"{ratio} | {r['mb_s'] / copy['mb_s']:.0%} |"
        )
    lines += [
        "",
        f"Packing took {result['pack_s']:.1f} s ({result['n'] / result['pack_s']:.0f} img/s); opening the split "
        f"(sha256 of every shard, once per process) took {result['verify_s']:.2f} s.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(loader_table(run()))
