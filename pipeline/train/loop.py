"""The step loop every model trains with: lr schedule, per-step seeds, clipping, logging, selection, checkpoints."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.core.checkpoint import save_checkpoint
from pipeline.core.params import LoopParams
from pipeline.core.progress import Progress
from pipeline.dataset.loader import ShardDataset, ShardStream, make_loader
from pipeline.train.checkpoint import RunKey, find_resume
from pipeline.train.live import LiveLog
from pipeline.train.runtime import Runtime

Metrics = Mapping[str, float | torch.Tensor]
# A training step: (batch from the loader, this step's CPU generator) -> scalar metrics such as {"train/loss": ...}.
TrainStep = Callable[[dict[str, torch.Tensor], torch.Generator], Metrics]
# An evaluation: () -> scalar metrics, the same on every rank (reduce inside it).
Evaluate = Callable[[], dict[str, float]]
# Model selection: evaluation metrics -> a tuple to maximise (e.g. (val top-1, -val loss)).
Select = Callable[[Mapping[str, float]], tuple[float, ...]]
# Work after a logged step (grids, GIF frames): step -> None, run with every module in eval mode and no gradients.
AfterLog = Callable[[int], None]


def lr_factor(step: int, steps: int, warmup: int = 0, schedule: str = "constant") -> float:
    """The multiplier of the peak lr at `step` (0-based): a linear warm-up, then constant or cosine to zero."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def state_on_cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a module's state dict (the selected weights outlive later steps)."""
    return {name: value.detach().to("cpu", copy=True) for name, value in module.state_dict().items()}


@dataclass
class FitResult:
    """What a `Trainer.fit` call did: its steps and images, and where the time went (a run log, not a metric)."""

    start_step: int = 0
    step: int = 0
    images: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    data_wait_seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def data_wait_share(self) -> float:
        return self.data_wait_seconds / self.seconds if self.seconds else 0.0

    def record(self, world_size: int, device: torch.device | str) -> dict[str, Any]:
        """The run-log entries every training stage writes (img/s summed over `world_size` ranks)."""
        return {
            "resumed_from_step": self.start_step,
            "steps_run": self.step - self.start_step,
            "train_seconds": round(self.seconds, 2),
            "train_cpu_seconds": round(self.cpu_seconds, 2),
            "images_per_s": round(self.images_per_s * world_size, 1),
            "data_wait_share": round(self.data_wait_share, 4),
            "world_size": world_size,
            "device": str(device),
        }


class Trainer:
    """Runs `steps` training steps of one or more modules and keeps everything a stage needs around them.

    Per step: the lr factor, a seed derived from (seed, step, rank), the task's `train_step` (which calls
    `backward`), curves every `log_every` steps averaged over ranks, an evaluation and model selection every
    `eval_every` steps, and an atomic checkpoint every `checkpoint_every` steps and at the end; rank 0 shows the
    progress (a bar on a terminal, a line every 10 % in a log) with the `show` metrics beside it. A checkpoint is
    resumed only when its run key (params, code, data) matches; the data order and every random draw of a
    resumed run are those of an uninterrupted one, so on the CPU it ends with the same weights.

    Args:
        rt: the process's runtime.
        loop: the section's loop params.
        modules: name -> module (unwrapped; their state dicts are checkpointed).
        optimizers: name -> optimizer; each param group's `lr` is its peak lr times `lr_at(step)`.
        key: the run key checkpoints carry.
        checkpoint: the checkpoint file, or None for no checkpoints.
        live_dir: the dvclive folder, or None for no curves.
        select: evaluation metrics -> a tuple to maximise; None keeps the last weights.
        lr_at: step -> lr multiplier.
        label: what the progress calls the run (the stage's name).
        show: training metrics shown beside the progress, e.g. ("train/loss",).
    """

    def __init__(
        self,
        rt: Runtime,
        loop: LoopParams,
        modules: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        key: RunKey,
        checkpoint: Path | None = None,
        live_dir: Path | None = None,
        select: Select | None = None,
        lr_at: Callable[[int], float] = lambda step: 1.0,
        label: str = "train",
        show: Sequence[str] = (),
    ) -> None:
        self.rt, self.loop, self.key, self.label, self.show = rt, loop, key, label, tuple(show)
        self.modules, self.optimizers = dict(modules), dict(optimizers)
        self.checkpoint, self.live_dir, self.select, self.lr_at = checkpoint, live_dir, select, lr_at
        self.peak_lrs = {name: [g["lr"] for g in opt.param_groups] for name, opt in self.optimizers.items()}
        self.step = 0
        self.best: dict[str, Any] | None = None
        # Curve sums of the steps since the last logged point: checkpointed, so a resumed curve equals an unbroken one.
        self.pending: dict[str, float] = {}
        self.pending_steps = 0
        self.live = LiveLog(live_dir or ".", enabled=False)

    # ---- start: resume or fresh ---------------------------------------------------------------------------------
    def start(self) -> str:
        """Resume from a matching checkpoint or start fresh; opens the dvclive folder. Returns what happened."""
        message = "checkpoints off; training from step 0"
        resume_step = None
        if self.checkpoint is not None:
            found = find_resume(self.checkpoint, self.key)
            message = found.message
            if found.checkpoint is not None:
                self._restore(found.checkpoint)
                resume_step = self.step
        if self.live_dir is not None:
            self.live = LiveLog(self.live_dir, resume_step, enabled=self.rt.is_main)
        return message

    def _restore(self, payload: dict[str, Any]) -> None:
        for name, module in self.modules.items():
            module.load_state_dict(payload["modules"][name])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(payload["optimizers"][name])
        self.step, self.best = int(payload["step"]), payload.get("best")
        self.pending = dict(payload.get("pending", {}))
        self.pending_steps = int(payload.get("pending_steps", 0))

    # ---- backward: one optimizer step ---------------------------------------------------------------------------
    def backward(self, loss: torch.Tensor, optimizer: str = "model") -> float:
        """zero_grad, backward, clip the global grad norm (when `grad_clip` > 0), step. Returns the norm (or 0)."""
        opt = self.optimizers[optimizer]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = 0.0
        if self.loop.grad_clip > 0:
            params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.loop.grad_clip))
        opt.step()
        return norm

    # ---- the loop -----------------------------------------------------------------------------------------------
    def batches(self, stream: ShardStream, num_workers: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """The training batches from `self.step` on: epoch = step // batches per epoch, skipping those done."""
        per_epoch = len(stream)
        if per_epoch == 0:
            raise ValueError(
                f"the training split has {len(stream.data)} samples: too few for one batch of {stream.batch_size} "
                f"on each of {stream.world_size} rank(s)"
            )
        step = self.step
        while True:
            epoch, done = divmod(step, per_epoch)
            stream.set_epoch(epoch)
            for batch in islice(make_loader(stream, num_workers, self.rt.device), done, None):
                yield batch
                step += 1

    def fit(
        self,
        stream: ShardStream,
        train_step: TrainStep,
        evaluate: Evaluate | None = None,
        after_log: AfterLog | None = None,
    ) -> FitResult:
        """Train from `self.step` to `loop.steps`; see the class docstring for what happens around each step."""
        loop, rt = self.loop, self.rt
        result = FitResult(start_step=self.step, step=self.step)
        started, cpu_started = time.perf_counter(), time.process_time()
        source = self.batches(stream)
        progress = Progress(self.label, self.step, loop.steps, enabled=rt.is_main)
        for module in self.modules.values():
            module.train()
        try:
            while self.step < loop.steps:
                waited = time.perf_counter()
                batch = next(source)
                result.data_wait_seconds += time.perf_counter() - waited
                # ---- lr and seed
                factor = self.lr_at(self.step)
                for name, opt in self.optimizers.items():
                    for group, peak in zip(opt.param_groups, self.peak_lrs[name], strict=True):
                        group["lr"] = peak * factor
                generator = rt.seed_step(loop.seed, self.step)
                # ---- forward, backward, step (inside the task's train_step)
                metrics = train_step(batch, generator)
                self.step += 1
                result.images += int(batch["image"].shape[0])
                for name, value in metrics.items():
                    self.pending[name] = self.pending.get(name, 0.0) + float(value)
                self.pending_steps += 1
                # ---- log, and the images of a logged step
                if self.step % loop.log_every == 0 or self.step == loop.steps:
                    means = {name: total / self.pending_steps for name, total in self.pending.items()}
                    self.live.log(self.step, {**rt.mean_over_ranks(means), "train/lr_factor": factor})
                    self.pending, self.pending_steps = {}, 0
                    if after_log is not None:
                        self.in_eval_mode(after_log, self.step)
                # ---- evaluate and select
                if evaluate is not None and (self.step % loop.eval_every == 0 or self.step == loop.steps):
                    self.evaluate(evaluate)
                # ---- checkpoint
                if self.step % loop.checkpoint_every == 0 or self.step == loop.steps:
                    self.save()
                progress.update(self.step, {n.rpartition("/")[2]: float(metrics[n]) for n in self.show if n in metrics})
        finally:
            progress.close()
        result.step = self.step
        result.seconds = time.perf_counter() - started
        result.cpu_seconds = time.process_time() - cpu_started
        return result

    def in_eval_mode(self, work: Callable[..., Any], *args: Any) -> Any:
        """`work(*args)` with every module in eval mode and no gradients; the modules train again afterwards."""
        for module in self.modules.values():
            module.eval()
        try:
            with torch.no_grad():
                return work(*args)
        finally:
            for module in self.modules.values():
                module.train()

    def evaluate(self, evaluate: Evaluate) -> dict[str, float]:
        """Run an evaluation in eval mode, log it, and keep the weights when `select` improves."""
        metrics = self.in_eval_mode(evaluate)
        if not metrics:
            return metrics
        self.live.log(self.step, metrics)
        if self.select is not None:
            score = list(self.select(metrics))
            if self.best is None or score > list(self.best["score"]):
                modules = {name: state_on_cpu(module) for name, module in self.modules.items()}
                self.best = {"score": score, "step": self.step, "metrics": dict(metrics), "modules": modules}
        return metrics

    def save(self) -> None:
        """Write the checkpoint (rank 0), atomically. Every rank calls it: the pending curve sums are averaged."""
        if self.checkpoint is None:
            return
        # The mean over ranks of the partial sums: after a resume, each rank adds its own steps to it, and the mean
        # over ranks of that is the mean an unbroken run logs.
        pending = self.rt.mean_over_ranks(self.pending)
        if not self.rt.is_main:
            return
        payload = {
            "run": self.key.record(),
            "step": self.step,
            "modules": {name: module.state_dict() for name, module in self.modules.items()},
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "best": self.best,
            "pending": pending,
            "pending_steps": self.pending_steps,
        }
        save_checkpoint(self.checkpoint, payload)

    def selected(self, module: str = "model") -> dict[str, torch.Tensor]:
        """The state dict chosen by `select` (the last weights without selection or before any evaluation)."""
        if self.best is not None:
            return self.best["modules"][module]
        return state_on_cpu(self.modules[module])

    def close(self) -> None:
        self.live.close()


def eval_batches(rt: Runtime, data: ShardDataset, batch_size: int) -> Iterator[tuple[dict[str, torch.Tensor], Any]]:
    """This rank's share of a split in file order, with a mask of the samples it counts.

    Every rank gets the same number of batches (the last rank's share is padded with repeats), and the masks
    count each sample exactly once over all ranks, so sums reduced with `rt.all_sum` are exact.
    """
    stream = ShardStream(
        data, batch_size, shuffle=False, equalise="pad", rank=rt.rank, world_size=rt.world_size, window=1
    )
    size = stream.per_rank()
    mine = set(data.rows[rt.rank * size : min((rt.rank + 1) * size, len(data))].tolist())
    for batch in make_loader(stream, 0, rt.device):
        keep = torch.tensor([int(row) in mine for row in batch["index"]], dtype=torch.bool)
        yield batch, keep
