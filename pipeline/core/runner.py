"""Shared entry-point plumbing for stages and the CLI: load params, run, write metrics, turn errors into messages."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.core.params import ParamsError
from pipeline.core.storage import DiskFullError, OutputError, atomic_write_json


class StageError(RuntimeError):
    """A failure the user can act on; the message says what went wrong and what to do."""


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    """Write a stage's flat metrics JSON (what `dvc metrics show/diff` read)."""
    atomic_write_json(Path(path), metrics)


@dataclass
class RunLog:
    """What one run of a stage did and how long it took: work counts, timings, and why it failed.

    Metrics describe the stage's output; this describes the run, so a resumed run and a fresh one that leave the
    same output differ only here. It is written after every run, failed or not, to `path` (set once params are
    loaded). It is not a DVC output: its timings would change `dvc.lock` on every run.
    """

    stage: str
    path: Path | None = None
    work: dict[str, Any] = field(default_factory=dict)
    _started: float = field(default_factory=time.perf_counter)
    _cpu_started: float = field(default_factory=lambda: _cpu_seconds())

    def write(self, status: str, message: str = "") -> None:
        if self.path is None:
            return
        payload = {
            "stage": self.stage,
            "status": status,
            "message": message,
            "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "wall_s": round(time.perf_counter() - self._started, 3),
            "cpu_s": round(_cpu_seconds() - self._cpu_started, 3),  # worker processes included
            **self.work,
        }
        atomic_write_json(self.path, payload)


def _cpu_seconds() -> float:
    """User + system CPU of this process and of the children it has waited for (align's process pool)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def run_stage(
    name: str,
    body: Callable[[], None],
    expected: tuple[type[BaseException], ...] = (),
    run_log: RunLog | None = None,
) -> None:
    """Run a stage body; known failures (and a full disk) exit 1 with a one-paragraph message, not a traceback.

    The run log, when given, is written whatever happens: `ok`, `failed` with the message, or `interrupted`.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("icrawler", "feeder", "parser", "downloader"):  # icrawler logs every page; our report says it once
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    run_log = run_log or RunLog(name)
    try:
        body()
    except (ParamsError, StageError, OutputError, *expected) as exc:
        message = str(exc)
        if isinstance(exc, DiskFullError) and "free some space" not in message:
            message += "; free some space and re-run: what the last good run saved is intact"
        _write_log(run_log, "failed", message)
        print(f"\n[{name}] failed: {message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        _write_log(run_log, "interrupted", "stopped by Ctrl-C")
        print(f"\n[{name}] interrupted; re-run to resume where it stopped", file=sys.stderr)
        # Everything kept is already journaled on disk. Worker threads (icrawler's downloaders, OpenCV's pool)
        # may still be inside native code, and tearing the interpreter down under them aborts the process
        # ("terminate called without an active exception", exit -6), so leave without finalisation.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    except Exception as exc:  # a bug: the run log says so, and the traceback follows for the report
        _write_log(run_log, "failed", f"internal error: {type(exc).__name__}: {exc}")
        raise
    _write_log(run_log, "ok")


def _write_log(run_log: RunLog, status: str, message: str = "") -> None:
    """Write the run log; a disk too full for it too is said, not raised over the failure being reported."""
    try:
        run_log.write(status, message)
    except OutputError as exc:
        print(f"(the run log could not be written either: {exc})", file=sys.stderr)
