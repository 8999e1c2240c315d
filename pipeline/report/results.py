"""The results table: each stage's headline numbers beside their chance level or floor, and against a git baseline.

`i2c results` prints it in the terminal and the report puts the same rows at the top of its page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.report.collect import PipelineView, flatten, is_number


@dataclass(frozen=True)
class Headline:
    """One number of a stage's metrics file, and the key of what to read it against.

    Attributes:
        label: what the number is, in words.
        key: its dotted key in the stage's metrics file.
        against: the dotted key of its chance level, floor or total, if it has one.
        kind: how `against` reads: "chance", "floor", "of" (a count out of a total), or what it is ("avatars").
    """

    label: str
    key: str
    against: str | None = None
    kind: str = ""


HEADLINES: dict[str, tuple[Headline, ...]] = {
    "crawl_faces": (Headline("photos kept", "faces.kept"), Headline("identities", "identities")),
    "crawl_avatars": (Headline("avatars kept", "avatars.kept"),),
    "align": (
        Headline("faces aligned", "faces.kept"),
        Headline("avatars aligned", "avatars.kept"),
        Headline("right on sandbox ground truth", "truth"),
    ),
    "pack": (Headline("identities", "identities"), Headline("test faces", "faces.test")),
    "pretrain_f": (
        Headline("test top-1", "test_top1", "chance_top1", "chance"),
        Headline("test top-5", "test_top5", "chance_top5", "chance"),
    ),
    "train_cam": (
        Headline("test top-1", "test_top1", "chance_top1", "chance"),
        Headline("localised (IoU >= 0.5)", "localised", "floor_localised", "floor"),
        Headline("localised, faces < 70 px", "localised_small", "floor_localised_small", "floor"),
        Headline("mean IoU", "mean_iou", "floor_mean_iou", "floor"),
    ),
    "train_dcgan": (
        Headline("fd_f (lower is better)", "fd_f", "fd_f_floor", "floor"),
        Headline("FID (lower is better)", "fid", "fid_floor", "floor"),
        Headline("diversity generated / real", "diversity_ratio"),
        Headline("copies of training faces", "copy_share", "copy_share_chance", "chance"),
    ),
    "train_dtn": (
        Headline("median retrieval rank", "median_rank", "chance_rank", "chance"),
        Headline("identity top-1 of the emoji", "identity_top1", "chance_top1", "chance"),
        Headline("traits >= chance + 0.25 (held-out people)", "traits_read", "traits_compared", "of"),
        Headline("emoji spread (0 = one emoji for all)", "emoji_spread", "avatar_spread", "avatars"),
        Headline("L_TID on held-out avatars", "test_tid", "tid_mean_avatar", "mean avatar"),
    ),
    "train_avatar_params": (
        Headline("traits >= chance + 0.25 (held-out people)", "traits_read", "traits_compared", "of"),
        *(
            Headline(
                f"{trait} balanced accuracy", f"traits.{trait}.balanced_accuracy", f"traits.{trait}.chance", "chance"
            )
            for trait in ("gender", "glasses", "hat", "beard", "hair", "hair_tone", "skin_tone")
        ),
    ),
}


@dataclass(frozen=True)
class Row:
    """One line of the table: the number now, what it reads against, and its value at the baseline."""

    stage: str
    label: str
    value: Any
    against: str  # "chance 0.021", "floor 0.209", "of 7", or ""
    baseline: Any  # None when the baseline has no such number
    change: str  # "+0.026", "", or "new"


def number(value: Any) -> str:
    """How the table writes a number: up to four significant decimals, integers as they are."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def _metrics(files: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for values in files.values():
        if isinstance(values, Mapping):
            flat.update(flatten(values))
    return flat


def result_rows(view: PipelineView) -> list[Row]:
    """The headline rows of every stage that has its metrics, in DAG order."""
    rows = []
    for stage in view.stages:
        now, then = _metrics(stage.metrics), _metrics(stage.baseline)
        for line in HEADLINES.get(stage.name, ()):
            if line.key not in now:
                continue
            value = now[line.key]
            against = f"{line.kind} {number(now[line.against])}" if line.against and line.against in now else ""
            before = then.get(line.key) if view.baseline_rev else None
            if view.baseline_rev is None:
                change = ""
            elif line.key not in then:
                change = "new"
            elif is_number(value) and is_number(before) and value != before:
                change = f"{value - before:+.4g}"
            else:
                change = "" if value == before else "changed"
            rows.append(Row(stage.name, line.label, value, against, before, change))
    return rows


def format_table(rows: list[Row], baseline: str) -> str:
    """The rows as a plain-text table, one block per stage."""
    header = ("stage", "metric", "value", "against", baseline, "change")
    cells = [(r.stage, r.label, number(r.value), r.against, number(r.baseline), r.change) for r in rows]
    widths = [max(len(str(c[i])) for c in [header, *cells]) for i in range(len(header))]

    def line(values: tuple[str, ...]) -> str:
        return "  ".join(
            str(v).rjust(w) if i in (2, 4, 5) else str(v).ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    out, previous = [line(header), "  ".join("-" * w for w in widths)], None
    for cell in cells:
        out.append(line(cell if cell[0] != previous else ("", *cell[1:])))
        previous = cell[0]
    return "\n".join(out)
