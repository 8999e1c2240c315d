"""Progress of long work: a tqdm bar on a terminal, and a plain line every 10 % when the output is a log file."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import TextIO

from tqdm import tqdm

LINES = 10  # plain lines per run when the output is not a terminal (every 10 %)


def duration(seconds: float) -> str:
    """`4.2 s`, `42 s`, `3 m 05 s` or `1 h 02 m`: what a person reads at a glance."""
    if seconds < 9.95:
        return f"{max(0.0, seconds):.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} m {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} m"


class Progress:
    """Steps `start`..`total` of one piece of work, with the latest values of a few named numbers.

    On a terminal: a bar with the step, the speed, the numbers and the time left. Otherwise (`make repro > log`)
    one line at every tenth of the work, so a log shows that the run is alive without a wall of carriage returns.

    Args:
        label: what runs (the stage's name).
        start: the step the work starts at (a resumed run starts past 0).
        total: the last step.
        unit: what a step is called in the bar ("step", "view").
        enabled: False on the ranks other than 0 and where a caller wants silence.
        stream: where to write (standard output by default: `make repro > log` gets the lines).
    """

    def __init__(
        self,
        label: str,
        start: int,
        total: int,
        unit: str = "step",
        enabled: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.label, self.start, self.total, self.unit = label, start, total, unit
        self.stream = stream or sys.stdout
        self.enabled = enabled and total > start
        self.started = time.perf_counter()
        self.next_line = self._line_after(start)
        self.bar = None
        if self.enabled and self.stream.isatty():
            self.bar = tqdm(
                total=total, initial=start, desc=label, unit=unit, file=self.stream, dynamic_ncols=True, leave=False
            )

    def _line_after(self, step: int) -> int:
        """The first step past `step` at a tenth of the work."""
        tenth = max(1, self.total // LINES)
        return (step // tenth + 1) * tenth

    def update(self, step: int, values: Mapping[str, float] | None = None) -> None:
        """The work has reached `step`; `values` are shown beside it (short names, e.g. {"loss_D": 1.2})."""
        if not self.enabled:
            return
        shown = {name: f"{float(value):.3g}" for name, value in (values or {}).items()}
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(step - self.bar.n)
            return
        if step < self.next_line and step < self.total:
            return
        self.next_line = self._line_after(step)
        elapsed = time.perf_counter() - self.started
        rate = (step - self.start) / elapsed if elapsed > 0 else 0.0
        left = (self.total - step) / rate if rate > 0 else 0.0
        numbers = "".join(f", {name} {value}" for name, value in shown.items())
        when = f"{duration(left)} left" if step < self.total else f"done in {duration(elapsed)}"
        print(
            f"{self.label}: {self.unit} {step}/{self.total} ({step / self.total:.0%}), {rate:.2f} {self.unit}/s"
            f"{numbers}, {when}",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
