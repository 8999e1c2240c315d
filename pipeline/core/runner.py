"""Shared entry-point plumbing for stages and the CLI: load params, run, write metrics, turn errors into messages."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.core.params import ParamsError
from pipeline.core.storage import atomic_write_json


class StageError(RuntimeError):
    """A failure the user can act on; the message says what went wrong and what to do."""


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    """Write a stage's flat metrics JSON (what `dvc metrics show/diff` read)."""
    atomic_write_json(Path(path), metrics)


def run_stage(name: str, body: Callable[[], None], expected: tuple[type[BaseException], ...] = ()) -> None:
    """Run a stage body; known failures exit 1 with a one-paragraph message instead of a traceback."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("icrawler", "feeder", "parser", "downloader"):  # icrawler logs every page; our report says it once
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    try:
        body()
    except (ParamsError, StageError, *expected) as exc:
        print(f"\n[{name}] failed: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"\n[{name}] interrupted; re-run to resume where it stopped", file=sys.stderr)
        sys.exit(130)
