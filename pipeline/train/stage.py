"""The entry point every training stage shares: params, training, metrics from rank 0, a summary line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from pipeline.core.params import Params, load_params
from pipeline.core.runner import RunLog, run_stage, write_metrics
from pipeline.train.runtime import torchrun_env


class TrainResult(Protocol):
    metrics: dict[str, Any]
    run: dict[str, Any]


def run_training_stage(
    name: str,
    given: Params | None,
    section_of: Callable[[Params], Any],
    train: Callable[[Params], TrainResult],
    summary: Callable[[dict[str, Any], Any], str],
    expected: tuple[type[BaseException], ...],
) -> None:
    """Train with params.yaml (or `given`, from `i2c -S`); rank 0 writes the run log, metrics and details.

    Args:
        section_of: the stage's params section (it names run_log, metrics and, when it has one, details).
        summary: the line printed from the metrics and the section.
        expected: the errors that are the user's to fix (one line, exit 1, no traceback).
    """
    run_log = RunLog(name)

    def body() -> None:
        params = given or load_params()
        section = section_of(params)
        main_rank = torchrun_env()[0] == 0
        if main_rank:
            run_log.path = Path(section.run_log)
        result = train(params)
        run_log.work = result.run
        if not main_rank:
            return
        write_metrics(section.metrics, result.metrics)
        if getattr(section, "details", None):
            write_metrics(section.details, result.details)  # type: ignore[attr-defined]
        print(summary(result.metrics, section))

    run_stage(name, body, expected=expected, run_log=run_log)
