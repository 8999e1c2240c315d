"""The one training skeleton: what every model stage does alike, around the few things each one declares."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from pipeline.core.checkpoint import CheckpointError
from pipeline.core.params import LoopParams, Params, load_params
from pipeline.core.progress import duration
from pipeline.core.runner import RunLog, StageError, run_stage, write_metrics
from pipeline.dataset.loader import ShardDataset, ShardError, ShardStream
from pipeline.train.checkpoint import CHECKPOINT_FILE, RunKey
from pipeline.train.loop import Metrics, Select, Trainer
from pipeline.train.runtime import Runtime, runtime, torchrun_env


def constant_lr(step: int) -> float:
    return 1.0


@dataclass
class Networks:
    """What a stage trains: its modules (checkpointed by name), their optimisers, model selection, the lr schedule.

    Attributes:
        select: evaluation metrics -> a tuple to maximise; None keeps the last weights.
        lr_at: step -> multiplier of every optimiser's peak lr.
    """

    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    select: Select | None = None
    lr_at: Callable[[int], float] = constant_lr


@dataclass(frozen=True)
class StageResult:
    """What a training run produced: the flat metrics, the long details, and what the run itself did (the run log)."""

    metrics: dict[str, Any]
    details: dict[str, Any]
    run: dict[str, Any]


class ModelStage(ABC):
    """One training stage: only what is its own. `train_model` runs it; `stage_main` is its DVC entry point.

    A stage names itself, its params section and the section of its loop keys (seed, steps, batch_size, the log,
    eval and checkpoint intervals, runtime), and implements the methods below in the order the runner calls them.
    Only `before_fit`, `evaluate` and `after_log` are optional. The runner sets `self.rt` (the runtime) before
    `build` and `self.trainer` before `before_fit`.
    """

    name: ClassVar[str]  # the DVC stage
    section_name: ClassVar[str]  # its params section
    loop_name: ClassVar[str]  # the section with the loop keys (its own, or the GAN stages' shared `train`)
    show: ClassVar[tuple[str, ...]] = ()  # training metrics shown beside the progress, e.g. ("train/loss",)
    errors: ClassVar[tuple[type[BaseException], ...]] = ()  # more errors that are the user's to fix
    one_process: ClassVar[bool] = False  # True: refuses torchrun
    rt: Runtime
    trainer: Trainer

    def __init__(self, params: Params, say: Callable[[str], None] = print) -> None:
        self.params, self.say = params, say
        self.section = getattr(params, self.section_name)
        self.loop: LoopParams = getattr(params, self.loop_name)

    @abstractmethod
    def read_data(self) -> ShardDataset:
        """Open the inputs, before any device work; returns the split the training batches come from."""

    @abstractmethod
    def build(self) -> Networks:
        """The networks and optimisers, on `self.rt` (weights drawn here, in a fixed order: the run is seeded)."""

    @abstractmethod
    def run_key(self) -> RunKey:
        """What the weights depend on: the shaping params, the code version and the data (called after `build`)."""

    def before_fit(self) -> None:  # noqa: B027 (an optional hook)
        """Work once the trainer has resumed or started fresh (caches, the grid of step 0); none by default."""

    def evaluate(self) -> dict[str, float]:
        """Scalar val metrics every `eval_every` steps, the same on every rank; none by default."""
        return {}

    def after_log(self, step: int) -> None:  # noqa: B027 (an optional hook)
        """Images after every logged step; none by default."""

    @abstractmethod
    def train_step(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> Metrics:
        """One step on a batch, calling `self.trainer.backward(loss, name)` once per optimiser; returns curves."""

    @abstractmethod
    def finish(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The trained model's evaluation, on every rank: (flat metrics, details)."""

    @abstractmethod
    def save(self, metrics: dict[str, Any]) -> None:
        """Rank 0: the model file and the final images."""

    @abstractmethod
    def summary(self, metrics: dict[str, Any], details: dict[str, Any]) -> str:
        """The result line printed at the end, numbers beside their chance levels or floors."""

    def where(self) -> str:
        """The last line of a run: where its results are."""
        images = Path(self.section.live_dir) / "plots" / "images"
        return f"{self.name}: metrics in {self.section.metrics}, images in {images}/, model in {self.section.model}"


def train_model(stage: ModelStage) -> StageResult:
    """Run one training stage: data, runtime, networks, resume, training with progress, evaluation, the model file.

    Raises:
        StageError: when the training split makes no batch, or a one-process stage runs under torchrun.
    """
    loop, section = stage.loop, stage.section
    train_split = stage.read_data()
    with runtime(loop.runtime, loop.seed) as rt:
        if rt.distributed and stage.one_process:
            raise StageError(f"{stage.name} runs in one process; launch it without torchrun")
        stage.rt = rt
        networks = stage.build()
        stage.trainer = trainer = Trainer(
            rt,
            loop,
            networks.modules,
            networks.optimizers,
            stage.run_key(),
            checkpoint=Path(section.checkpoint_dir) / CHECKPOINT_FILE,
            live_dir=Path(section.live_dir),
            select=networks.select,
            lr_at=networks.lr_at,
            label=stage.name,
            show=stage.show,
        )
        try:
            message = trainer.start()
            if rt.is_main:
                stage.say(f"{stage.name}: {message}")
            stream = ShardStream(train_split, loop.batch_size, shuffle=True, seed=loop.seed, drop_last=True)
            if len(stream) == 0:
                raise StageError(
                    f"{len(train_split)} training images over {rt.world_size} rank(s) make no batch of "
                    f"{loop.batch_size}; lower {stage.loop_name}.batch_size"
                )
            stage.before_fit()
            fit = trainer.fit(stream, stage.train_step, stage.evaluate, stage.after_log)
            started, cpu_started = time.perf_counter(), time.process_time()
            metrics, details = stage.finish()
            run = fit.record(rt.world_size, rt.device)
            run["eval_seconds"] = round(time.perf_counter() - started, 2)
            run["eval_cpu_seconds"] = round(time.process_time() - cpu_started, 2)
            if rt.is_main:
                stage.save(metrics)
                stage.say(
                    f"{stage.name}: {run['steps_run']} steps in {duration(fit.seconds)} ({run['images_per_s']:.0f} "
                    f"img/s), evaluation {duration(run['eval_seconds'])}"
                )
        finally:
            trainer.close()
    return StageResult(metrics, details, run)


def stage_main(stage_class: type[ModelStage], given: Params | None = None) -> None:
    """The entry point of a training stage: params.yaml (or `given`, from `i2c -S`), training, then on rank 0 the
    run log, metrics, details and two lines: the summary and where the results are.

    Under torchrun every rank trains its share of each batch and rank 0 writes the files.
    """
    run_log = RunLog(stage_class.name)

    def body() -> None:
        params = given or load_params()
        stage = stage_class(params)
        main_rank = torchrun_env()[0] == 0
        if main_rank:
            run_log.path = Path(stage.section.run_log)
        result = train_model(stage)
        run_log.work = result.run
        if not main_rank:
            return
        write_metrics(stage.section.metrics, result.metrics)
        write_metrics(stage.section.details, result.details)
        print(stage.summary(result.metrics, result.details))
        print(stage.where())

    expected = (StageError, CheckpointError, ShardError, FileNotFoundError, *stage_class.errors)
    run_stage(stage_class.name, body, expected=expected, run_log=run_log)
