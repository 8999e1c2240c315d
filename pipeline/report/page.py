"""The HTML of the report: one static page, styles inline, every image a data: URI, no script."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from pipeline.report.collect import PipelineView, StageView, flatten, is_number
from pipeline.report.results import number, result_rows

FOLD_OVER = 6  # a breakdown (`*_by_*`, `per_*`) with more values than this is folded under <details>

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1b1f24;margin:0;background:#f6f7f9}
header{background:#1d2b44;color:#fff;padding:18px 28px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;color:#c9d4e6}main{max-width:1280px;margin:0 auto;padding:8px 28px 40px}
nav{margin:10px 0 0}nav a{color:#c9d4e6;margin-right:14px;font-family:monospace}
section{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:14px 20px;margin:18px 0}
h2{margin:4px 0 10px;font-size:19px}h3{font-size:15px;margin:14px 0 6px;font-family:monospace;color:#3a4656}
table{border-collapse:collapse;margin:4px 0 8px;font-variant-numeric:tabular-nums}
td,th{padding:3px 12px 3px 0;text-align:left;border-bottom:1px solid #eef0f3;vertical-align:top}
th{font-weight:600;color:#3a4656}td.num,th.num{text-align:right}td.key{font-family:monospace}
td.up{color:#0b6b2b}td.down{color:#a3261b}.muted{color:#6a7482}
figure{margin:10px 0 16px}figure img{max-width:100%;border:1px solid #dde1e6;border-radius:4px}
figcaption{color:#4c5663;font-size:13px;margin-top:4px}details summary{cursor:pointer;color:#3a4656}
pre{background:#f1f3f6;padding:10px;border-radius:6px;overflow:auto;font-size:13px}
"""


@dataclass(frozen=True)
class Visual:
    """An image on the page: a data: URI with a title and what it shows."""

    title: str
    caption: str
    uri: str


def fmt(value: Any) -> str:
    """How the page writes a metric or param value (tests read the page back with this)."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "—"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) < 1e15 else f"{value:.4g}"
    return str(value)


def _delta(now: Any, then: Any, has_then: bool) -> tuple[str, str]:
    """The change column's text and CSS class."""
    if not has_then:
        return "new", "muted"
    if now == then:
        return "", ""
    if is_number(now) and is_number(then):
        diff = now - then
        return (f"{'+' if diff > 0 else ''}{fmt(diff)}", "up" if diff > 0 else "down")
    return f"was {fmt(then)}", ""


def _rows(now: Mapping[str, Any], then: Mapping[str, Any] | None, keys: Sequence[str]) -> str:
    rows = []
    for key in keys:
        value = now.get(key)
        delta, css = _delta(value, (then or {}).get(key), then is not None and key in then)
        rows.append(
            f'<tr><td class="key">{escape(key)}</td><td class="num">{escape(fmt(value))}</td>'
            + (f'<td class="num muted">{escape(fmt(then.get(key)))}</td>' if then is not None else "")
            + (f'<td class="num {css}">{escape(delta)}</td>' if then is not None else "")
            + "</tr>"
        )
    return "".join(rows)


def folded(keys: Sequence[str]) -> dict[str, list[str]]:
    """Breakdowns to fold away: a `*_by_*` or `per_*` group of more than FOLD_OVER values (one per identity, reason…).

    Returns:
        {group prefix: its flat keys}; every other key is a row of the main table.
    """
    groups: dict[str, list[str]] = {}
    for key in keys:
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            if "_by_" in part or part.startswith("per_"):
                groups.setdefault(".".join(parts[: depth + 1]), []).append(key)
                break
    return {prefix: members for prefix, members in groups.items() if len(members) > FOLD_OVER}


def metrics_table(now: Mapping[str, Any], then: Mapping[str, Any] | None, baseline: str) -> str:
    """A metrics file as key | value | baseline | change rows; long breakdowns folded under <details>."""
    flat_now, flat_then = flatten(now), flatten(then) if then is not None else None
    keys = list(flat_now) + [k for k in (flat_then or {}) if k not in flat_now]
    folds = folded(keys)
    hidden = {k for members in folds.values() for k in members}
    head = '<tr><th>metric</th><th class="num">value</th>'
    if flat_then is not None:
        head += f'<th class="num">{escape(baseline)}</th><th class="num">change</th>'
    html = f"<table>{head}</tr>{_rows(flat_now, flat_then, [k for k in keys if k not in hidden])}</table>"
    for group, members in folds.items():
        changed = flat_then is not None and any(flat_now.get(k) != flat_then.get(k) for k in members)
        html += (
            f"<details{' open' if changed else ''}><summary>{escape(group)} ({len(members)} values)</summary>"
            f"<table>{head}</tr>{_rows(flat_now, flat_then, members)}</table></details>"
        )
    return html


def _changes(view: PipelineView, exclude: set[str]) -> str:
    if view.baseline_rev is None:
        return f'<p class="muted">{escape(view.baseline_note)}: nothing to compare with.</p>'
    params = sorted(k for k in view.params_now.keys() | view.params_then.keys()
                    if view.params_now.get(k) != view.params_then.get(k))  # fmt: skip
    metrics: list[tuple[str, Any, Any]] = []
    for stage in view.stages:
        for path in stage.metrics.keys() | stage.baseline.keys():
            if path in exclude:
                continue
            now, then = flatten(stage.metrics.get(path, {})), flatten(stage.baseline.get(path, {}))
            if path not in stage.baseline or path not in stage.metrics:  # a whole file came or went: one row
                counts = f"{len(now or then)} values"
                metrics.append((path, counts if now else None, counts if then else None))
                continue
            metrics += [(f"{stage.name}.{k}", now.get(k), then.get(k)) for k in sorted(now.keys() | then.keys())
                        if now.get(k) != then.get(k)]  # fmt: skip
    if not params and not metrics:
        return f"<p>No param or metric differs from {escape(view.baseline_note)}.</p>"
    html = ""
    for title, rows in (
        ("params", [(k, view.params_now.get(k), view.params_then.get(k)) for k in params]),
        ("metrics", metrics),
    ):
        if rows:
            body = "".join(
                f'<tr><td class="key">{escape(k)}</td><td class="num">{escape(fmt(now))}</td>'
                f'<td class="num muted">{escape(fmt(then))}</td></tr>'
                for k, now, then in rows
            )
            html += (
                f'<h3>{title} ({len(rows)})</h3><table><tr><th>{title[:-1]}</th><th class="num">now</th>'
                f'<th class="num">{escape(view.baseline_note)}</th></tr>{body}</table>'
            )
    return html


def _results(view: PipelineView) -> str:
    """The headline numbers of every stage beside their chance level or floor (`i2c results` prints the same)."""
    rows = result_rows(view)
    if not rows:
        return '<p class="muted">no stage has written its metrics yet.</p>'
    compare = view.baseline_rev is not None
    head = '<tr><th>stage</th><th>metric</th><th class="num">value</th><th>against</th>'
    head += f'<th class="num">{escape(view.baseline_note)}</th><th class="num">change</th>' if compare else ""
    body = ""
    for row in rows:
        css = "up" if row.change.startswith("+") else "down" if row.change.startswith("-") else "muted"
        body += (
            f'<tr><td class="key">{escape(row.stage)}</td><td>{escape(row.label)}</td>'
            f'<td class="num">{escape(number(row.value))}</td><td class="muted">{escape(row.against)}</td>'
        )
        if compare:
            body += f'<td class="num muted">{escape(number(row.baseline))}</td>'
            body += f'<td class="num {css}">{escape(row.change)}</td>'
        body += "</tr>"
    return f"<table>{head}</tr>{body}</table>"


def _figure(visual: Visual) -> str:
    return (
        f'<figure><img src="{visual.uri}" alt="{escape(visual.title)}"><figcaption><b>{escape(visual.title)}</b>'
        f"{' — ' + escape(visual.caption) if visual.caption else ''}</figcaption></figure>"
    )


def _stage(stage: StageView, visuals: Sequence[Visual], view: PipelineView, exclude: set[str]) -> str:
    upstream = ", ".join(f'<a href="#stage-{escape(u)}">{escape(u)}</a>' for u in stage.upstream) or "none"
    html = f'<section id="stage-{escape(stage.name)}"><h2>{escape(stage.name)}</h2>'
    html += f'<p class="muted">upstream: {upstream}</p>'
    for path in sorted(stage.metrics.keys() | stage.baseline.keys()):
        if path in exclude:
            continue
        then = stage.baseline.get(path, {}) if view.baseline_rev else None
        html += f"<h3>{escape(path)}</h3>" + metrics_table(stage.metrics.get(path, {}), then, view.baseline_note)
    html += "".join(_figure(v) for v in visuals)
    return html + "</section>"


def render(
    view: PipelineView,
    visuals: Mapping[str, Sequence[Visual]],
    dag_svg: str,
    dag_mermaid: str,
    exclude: set[str],
) -> str:
    """The whole page. `exclude`: metrics files not to tabulate (the report's own summary)."""
    shown = [s for s in view.stages if visuals.get(s.name) or set(s.metrics) - exclude or set(s.baseline) - exclude]
    nav = "".join(f'<a href="#stage-{escape(s.name)}">{escape(s.name)}</a>' for s in shown)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>img2caricature pipeline report</title><style>{STYLE}</style></head><body>"
        "<header><h1>img2caricature pipeline report</h1>"
        f"<p>{len(view.stages)} stages · metrics compared with {escape(view.baseline_note)}</p>"
        f"<nav>{nav}</nav></header>"
        '<main><section id="dag"><h2>Pipeline</h2>'
        f"{dag_svg}<details><summary>as Mermaid text (<code>dvc dag --mermaid</code>)</summary>"
        f"<pre>{escape(dag_mermaid)}</pre></details></section>"
        f'<section id="results"><h2>Results</h2>{_results(view)}</section>'
        f'<section id="changes"><h2>Changed since the baseline</h2>{_changes(view, exclude)}</section>'
        + "".join(_stage(s, visuals.get(s.name, ()), view, exclude) for s in shown)
        + "</main></body></html>\n"
    )
