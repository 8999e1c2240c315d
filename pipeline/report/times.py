"""Stage times side by side: the workspace's last run and any saved run (profiles/hour), from their run logs.

Each stage writes `reports/runs/<stage>.json` (not a DVC output, so timings never change dvc.lock). A saved run keeps
the same files under its folder, and `run.json` there may hold the wall time of the whole command that made it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

RUNS = Path("reports/runs")


@dataclass(frozen=True)
class StageTime:
    wall_s: float
    cpu_s: float
    resumed: bool  # the stage reused its saved work (a resumed or finished checkpoint, reused crawl results)


def stage_order(dvc_yaml: Path) -> list[str]:
    """The stage names in dvc.yaml's order (the DAG's order as written)."""
    return list((yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}))


def read_times(root: Path) -> dict[str, StageTime]:
    """Every stage's wall and CPU seconds in `root`/reports/runs; a damaged or partial log is skipped."""
    times = {}
    for file in sorted((root / RUNS).glob("*.json")):
        try:
            log: dict[str, Any] = json.loads(file.read_text())
            stage = str(log.get("stage") or file.stem)
            times[stage] = StageTime(float(log["wall_s"]), float(log["cpu_s"]), _reused(log))
        except (ValueError, KeyError, TypeError):
            continue
    return times


def _reused(log: dict[str, Any]) -> bool:
    """Whether a stage started from saved work: a resumed checkpoint, or reused crawl or align results."""
    parts = [log, *(v for v in log.values() if isinstance(v, dict))]
    return bool(log.get("resumed_from_step")) or any(int(part.get("reused") or 0) > 0 for part in parts)


def whole_run(root: Path) -> float | None:
    """The wall seconds of the command that made a saved run (its run.json), when recorded."""
    file = root / "run.json"
    if not file.is_file():
        return None
    try:
        return float(json.loads(file.read_text())["wall_s"])
    except (ValueError, KeyError, TypeError):
        return None


def format_times(columns: dict[str, Path], order: list[str]) -> str:
    """A plain-text table: one row per stage, wall and CPU seconds for every named run folder, and their sums."""
    runs = {name: read_times(root) for name, root in columns.items()}
    stages = [s for s in order if any(s in t for t in runs.values())]
    stages += sorted({s for t in runs.values() for s in t} - set(stages))
    header = ["stage", *(f"{name} wall / CPU s" for name in columns)]
    rows = []
    for stage in stages:
        cells = [stage]
        for times in runs.values():
            t = times.get(stage)
            cells.append("-" if t is None else f"{t.wall_s:.0f} / {t.cpu_s:.0f}" + (" (reused)" if t.resumed else ""))
        rows.append(cells)
    rows.append(["sum of stages", *(_sum(times) for times in runs.values())])
    totals = {name: whole_run(root) for name, root in columns.items()}
    if any(v is not None for v in totals.values()):
        rows.append(["whole run (recorded)", *("-" if v is None else f"{v:.0f}" for v in totals.values())])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _sum(times: dict[str, StageTime]) -> str:
    if not times:
        return "-"
    return f"{sum(t.wall_s for t in times.values()):.0f} / {sum(t.cpu_s for t in times.values()):.0f}"
