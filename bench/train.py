"""Benchmark: training throughput of the default f model, the training core on shards vs a seed-style PIL loop."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from bench.loader import PngFolder, make_images
from pipeline.core.manifest import write_manifest
from pipeline.core.params import LoopParams, Params, PretrainFParams
from pipeline.dataset.loader import Augment, ShardDataset, ShardStream
from pipeline.dataset.shards import write_dataset
from pipeline.train.checkpoint import RunKey
from pipeline.train.classifier import make_optimizer
from pipeline.train.loop import Trainer
from pipeline.train.pretrain_f import PretrainF, build_vgg
from pipeline.train.runtime import Runtime

CLASSES = 16


def pack(paths: list[Path], out: Path) -> None:
    """The PNGs as train shards, labelled round-robin into CLASSES identities."""
    import cv2

    rows = pd.DataFrame({"split": "train", "label": [i % CLASSES for i in range(len(paths))]})

    def load(i: int) -> tuple[np.ndarray, dict[str, Any]]:
        return cv2.cvtColor(cv2.imread(str(paths[i])), cv2.COLOR_BGR2RGB), {}

    index = write_dataset(rows, load, out, shard_size=100, workers=os.cpu_count() or 1)
    write_manifest(index.to_dict("records"), out / "index.parquet", list(index.columns), {})


class Ours:
    """The pretrain_f path: memory-mapped uint8 shards, resize + augmentation on the device, the Trainer loop."""

    def __init__(self, root: Path, section: PretrainFParams, channels_last: bool) -> None:
        torch.manual_seed(0)
        self.rt = Runtime(torch.device("cpu"), channels_last=channels_last)
        model, _ = build_vgg(section, CLASSES)
        loop = LoopParams(steps=1, batch_size=section.batch_size, eval_every=10**6, checkpoint_every=10**6)
        self.trainer = Trainer(self.rt, loop, {"model": model}, {"model": make_optimizer(section, model)}, RunKey())
        self.trainer.start()
        # pretrain_f's own training step, on this runtime, model and trainer
        stage = PretrainF(Params(pretrain_f=section))
        stage.rt, stage.trainer, stage.model, stage.net = self.rt, self.trainer, model, self.rt.prepare(model)
        stage.augment = Augment(**section.augment.model_dump())
        self.step = stage.train_step
        self.stream = ShardStream(ShardDataset(root, "train"), section.batch_size, seed=0, drop_last=True)

    def __call__(self, steps: int) -> tuple[int, float]:
        """Train `steps` more steps; returns (images, seconds waiting for data)."""
        self.trainer.loop = self.trainer.loop.model_copy(update={"steps": self.trainer.step + steps})
        fit = self.trainer.fit(self.stream, self.step)
        return fit.images, fit.data_wait_seconds


class SeedStyle:
    """What the seed did: an ImageFolder-style Dataset (PIL open, decode, resize, to tensor) feeding the same model."""

    def __init__(self, paths: list[Path], section: PretrainFParams, workers: int) -> None:
        torch.manual_seed(0)
        self.model, _ = build_vgg(section, CLASSES)
        self.optimizer = make_optimizer(section, self.model)
        loader = DataLoader(
            PngFolder(paths, section.input_size),
            batch_size=section.batch_size,
            shuffle=True,
            num_workers=workers,
            drop_last=True,
            persistent_workers=workers > 0,
        )
        self.batches = (batch for _ in iter(int, 1) for batch in loader)  # epochs without end
        self.labels = torch.arange(len(paths)) % CLASSES

    def __call__(self, steps: int) -> tuple[int, float]:
        images, wait = 0, 0.0
        self.model.train()
        for _ in range(steps):
            waited = time.perf_counter()
            x, _ = next(self.batches)
            wait += time.perf_counter() - waited
            target = self.labels[torch.randint(0, len(self.labels), (x.shape[0],))]
            loss = F.cross_entropy(self.model(x.mul(2).sub(1)), target, label_smoothing=0.1)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            images += x.shape[0]
        return images, wait


def run(n: int = 640, steps: int = 10, rounds: int = 5) -> dict[str, Any]:
    """Each input path trains the default pretrain_f model for `rounds` rounds of `steps` steps, round-robin.

    Every row is its fastest round after a warm-up round: other processes on a shared machine only add time, and
    round-robin gives every path the same chances of a quiet moment.
    """
    section = PretrainFParams()
    default_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        root = Path(tmp)
        (root / "png").mkdir()
        paths = make_images(root / "png", n)
        pack(paths, root / "shards")
        cases = [
            ("training core: shards, resize + augmentation on the device, channels_last (default)", 0,
             default_threads, Ours(root / "shards", section, True)),
            ("training core, NCHW (channels_last off)", 0, default_threads, Ours(root / "shards", section, False)),
            ("training core, channels_last", 0, 1, Ours(root / "shards", section, True)),
            ("training core, NCHW", 0, 1, Ours(root / "shards", section, False)),
            ("seed-style: ImageFolder-style PIL loader, no augmentation, NCHW", 0, default_threads,
             SeedStyle(paths, section, 0)),
            ("seed-style: ImageFolder-style PIL loader, no augmentation, NCHW", 2, default_threads,
             SeedStyle(paths, section, 2)),
            ("seed-style, NCHW", 0, 1, SeedStyle(paths, section, 0)),
        ]  # fmt: skip
        best: dict[int, dict[str, Any]] = {}
        for round_ in range(rounds + 1):
            for i, (_, _, threads, train) in enumerate(cases):
                torch.set_num_threads(threads)
                start, cpu = time.perf_counter(), time.process_time()
                images, wait = train(steps)
                seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
                if round_ and (i not in best or seconds < best[i]["seconds"]):  # round 0 warms up
                    best[i] = {"seconds": seconds, "cpu_seconds": cpu, "images": images, "wait": wait}
        torch.set_num_threads(default_threads)
        rows = [
            {"method": method, "workers": workers, "threads": threads, **best[i]}
            for i, (method, workers, threads, _) in enumerate(cases)
        ]
    return {
        "rows": rows,
        "steps": steps,
        "rounds": rounds,
        "batch_size": section.batch_size,
        "size": section.input_size,
        "width": section.width,
        "cores": os.cpu_count(),
        "load_avg": os.getloadavg()[0],
    }


def train_table(result: dict[str, Any]) -> str:
    """Markdown table for README/bench results."""
    rows = result["rows"]
    baseline = max((r for r in rows if r["method"].startswith("seed")), key=lambda r: r["images"] / r["seconds"])
    lines = [
        f"Training steps of the default `pretrain_f` model (VGG-16-D, width {result['width']}, BatchNorm, "
        f"{result['size']}x{result['size']} input, batch {result['batch_size']}, AdamW) on 152x152 face-like images; "
        f"each row is the fastest of {result['rounds']} rounds of {result['steps']} steps, run round-robin after a "
        f"warm-up round; CPU only, {result['cores']} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, torch {torch.__version__}, {date.today()}; 1-minute load average "
        f"{result['load_avg']:.1f} at the end (other jobs shared the cores).",
        "",
        "| input path | loader workers | torch threads | img/s (wall) | CPU s per 100 img | data wait share "
        "| vs best seed-style |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        per_s = r["images"] / r["seconds"]
        lines.append(
            f"| {r['method']} | {r['workers']} | {r['threads']} | {per_s:.1f} | "
            f"{100 * r['cpu_seconds'] / r['images']:.2f} | "
            f"{r['wait'] / r['seconds']:.1%} | {per_s / (baseline['images'] / baseline['seconds']):.2f}x |"
        )
    lines += [
        "",
        "CPU time counts this process only (DataLoader workers are separate processes). Data wait is the time the "
        "loop blocks on its next batch; the training core's resize and augmentation run inside the step, on the "
        "training device. GPU (bf16, channels_last): not measured, no GPU was available to this run.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(train_table(run()))
