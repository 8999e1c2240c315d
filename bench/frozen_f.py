"""Benchmark: the frozen f that the DTN's L_CONST sends gradients through, with and without its BatchNorms folded."""

from __future__ import annotations

import os
import platform
import time
from datetime import date
from typing import Any

import torch

from pipeline.core.params import DtnParams, PretrainFParams, TrainParams
from pipeline.models.dtn import to_encoder_input
from pipeline.models.vgg import VGG
from pipeline.train.pretrain_f import build_vgg


def frozen_f(section: PretrainFParams, fold: bool) -> VGG:
    """The default f architecture, frozen and in NHWC order as train_dtn holds it, folded or not."""
    torch.manual_seed(0)
    net, _ = build_vgg(section, num_classes=48)
    net.eval()
    if fold:
        net.fold_batch_norm()
    return net.requires_grad_(False).to(memory_format=torch.channels_last)


def run(n: int = TrainParams().batch_size, steps: int = 5, rounds: int = 5) -> dict[str, Any]:
    """f(G(x)) forward + backward to G(x) for a batch of n emoji, `rounds` rounds of `steps` passes, round-robin.

    Each row is its fastest round after a warm-up round; the two nets compute the same function (to 1e-7).
    """
    section, emoji_size = PretrainFParams(), DtnParams().emoji_size
    emoji = torch.rand(n, 3, emoji_size, emoji_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cases = [
        ("BatchNorm as trained", frozen_f(section, False)),
        ("BatchNorm folded (train_dtn)", frozen_f(section, True)),
    ]
    best: dict[int, float] = {}
    for round_ in range(rounds + 1):
        for i, (_, net) in enumerate(cases):
            start = time.perf_counter()
            for _ in range(steps):
                x = emoji.clone().requires_grad_(True)
                net.embed(
                    to_encoder_input(x, net.input_size).contiguous(memory_format=torch.channels_last)
                ).sum().backward()
            seconds = (time.perf_counter() - start) / steps
            if round_ and (i not in best or seconds < best[i]):  # round 0 warms up
                best[i] = seconds
    return {
        "rows": [{"method": name, "seconds": best[i]} for i, (name, _) in enumerate(cases)],
        "n": n, "emoji": emoji_size, "size": section.input_size, "width": section.width, "steps": steps,
        "rounds": rounds, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
        "load_avg": os.getloadavg()[0],
    }  # fmt: skip


def frozen_f_table(result: dict[str, Any]) -> str:
    """Markdown for bench/results/frozen_f.md and README."""
    base = result["rows"][0]["seconds"]
    lines = [
        f"The DTN's L_CONST pass: f(G(x)) forward and backward to G(x), f frozen (the default f: VGG-16-D, width "
        f"{result['width']}, {result['size']}x{result['size']} input, channels_last), a batch of {result['n']} emoji "
        f"of {result['emoji']}x{result['emoji']} (the `train.batch_size` of source photos); fastest of "
        f"{result['rounds']} rounds of {result['steps']} passes, round-robin after a warm-up; CPU only, "
        f"{result['cores']} cores, {result['threads']} torch threads, {platform.python_implementation()} "
        f"{platform.python_version()}, torch {torch.__version__}, {date.today()}; 1-minute load average "
        f"{result['load_avg']:.1f} at the end.",
        "",
        "| f | ms per batch | vs as trained |",
        "|---|---:|---:|",
    ]
    lines += [f"| {r['method']} | {1000 * r['seconds']:.0f} | {base / r['seconds']:.2f}x |" for r in result["rows"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(frozen_f_table(run()))
