"""dvclive for a training stage: curves and images on rank 0 only; dvc.yaml declares them, dvclive never edits it."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pipeline.core.storage import atomic_write_text

# dvclive logs "Resuming from step" and experiment chatter at INFO; our own messages say what happened.
logging.getLogger("dvclive").setLevel(logging.WARNING)


def truncate_curves(metrics_dir: Path, last_step: int) -> None:
    """Drop rows dvclive logged after `last_step` (by a run killed after its last checkpoint) from its .tsv files."""
    for path in sorted(Path(metrics_dir).rglob("*.tsv")):
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8")), delimiter="\t"))
        if not rows or "step" not in rows[0]:
            continue
        column = rows[0].index("step")
        kept = [rows[0]] + [row for row in rows[1:] if row and int(row[column]) <= last_step]
        if len(kept) != len(rows):
            out = io.StringIO()
            csv.writer(out, delimiter="\t", lineterminator="\n").writerows(kept)
            atomic_write_text(path, out.getvalue())


class LiveLog:
    """Curves per step and images through dvclive, written by rank 0 only.

    A fresh run clears the folder; a resumed run keeps its curves up to the checkpoint's step and continues them.
    `dvcyaml=False`: the stage's plots are declared in dvc.yaml by hand, so dvclive adds no duplicate entries.

    Args:
        directory: the dvclive folder (a persisted output of the stage).
        resume_step: the checkpoint's step when resuming, else None.
        enabled: False on ranks other than 0.
    """

    def __init__(self, directory: str | Path, resume_step: int | None = None, enabled: bool = True) -> None:
        self.directory = Path(directory)
        self.live = None
        if not enabled:
            return
        from dvclive import Live

        resume = resume_step is not None and self.directory.is_dir()
        if resume:
            truncate_curves(self.directory / "plots" / "metrics", resume_step)
        self.live = Live(str(self.directory), resume=resume, report=None, save_dvc_exp=False, dvcyaml=False)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """One row per metric at `step` (names like `train/loss` become plots/metrics/train/loss.tsv)."""
        if self.live is None:
            return
        self.live.step = step
        for name, value in metrics.items():
            self.live.log_metric(name, float(value))
        self.live.make_summary()

    def image(self, name: str, rgb: np.ndarray, step: int | None = None) -> None:
        """An RGB uint8 image under plots/images/ (overwritten by a later call with the same name)."""
        if self.live is None:
            return
        if step is not None:
            self.live.step = step
        self.live.log_image(name, np.ascontiguousarray(rgb))

    def confusion(self, name: str, actual: Sequence[str], predicted: Sequence[str]) -> None:
        """A confusion-matrix plot (plots/sklearn/<name>): one {actual, predicted} record per sample."""
        if self.live is None:
            return
        self.live.log_sklearn_plot("confusion_matrix", list(actual), list(predicted), name=name)

    def close(self) -> None:
        if self.live is not None:
            self.live.end()
            self.live = None
