"""Pictures for the page: training curves and confusion matrices (matplotlib), the DAG as SVG, data: URIs."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from pipeline.report.collect import Plot

CONFUSION_TEMPLATES = ("confusion", "confusion_normalized")
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".svg": "image/svg+xml"}
MIME[".webp"] = "image/webp"
INLINE_PNG_MAX = 400_000  # larger raster PNGs are inlined as JPEG to keep the page light


@dataclass(frozen=True)
class Series:
    """One line of a curve plot: `label` in the axes titled `group`."""

    group: str
    label: str
    x: np.ndarray
    y: np.ndarray
    x_name: str


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def jpeg(rgb: np.ndarray, quality: int = 88) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"cv2.imencode could not encode an array of shape {rgb.shape} as JPEG")
    return buf.tobytes()


def image_uri(path: Path) -> str:
    """A data: URI of an image file; a large PNG becomes a JPEG so the page stays a few MB at most."""
    data = path.read_bytes()
    suffix = path.suffix.lower()
    if suffix == ".png" and len(data) > INLINE_PNG_MAX:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if decoded is not None:
            return data_uri(jpeg(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)), "image/jpeg")
    return data_uri(data, MIME.get(suffix, "application/octet-stream"))


def read_records(path: Path) -> pd.DataFrame:
    """A plot data file as a table: .tsv/.csv, or .json/.yaml holding records (or one list of them)."""
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".csv"):
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    if suffix == ".json":
        data: Any = json.loads(path.read_text())
    else:
        import yaml

        data = yaml.safe_load(path.read_text())
    if isinstance(data, Mapping):
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else [data]
    return pd.DataFrame(data)


def _fields(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def curve_series(plot: Plot, root: Path) -> list[Series]:
    """The lines of one curve plot. A dvclive file `train/loss.tsv` becomes the line `train` in the axes `loss`,
    so train and val curves of one metric share an axes; a named plot is one axes with a line per file field."""
    series: list[Series] = []
    y_map = plot.props.get("y")
    for file in plot.files:
        path = root / file
        if not path.is_file():
            continue
        table = read_records(path)
        x_name = str(plot.props.get("x") or ("step" if "step" in table else ""))
        wanted = _fields(y_map.get(file)) if isinstance(y_map, Mapping) else _fields(y_map)
        if not wanted:
            wanted = [
                c for c in table.columns if c not in (x_name, "timestamp") and pd.api.types.is_numeric_dtype(table[c])
            ]
        x = table[x_name].to_numpy(float) if x_name in table else np.arange(len(table), dtype=float)
        for name in wanted:
            if name not in table:
                continue
            stem = Path(file).stem
            if isinstance(y_map, Mapping):
                group, label = str(plot.props.get("title") or plot.id), f"{stem}.{name}" if stem != name else file
            else:
                group, label = name, Path(file).parent.name if stem == name else stem
            series.append(Series(group, label or name, x, table[name].to_numpy(float), x_name or "row"))
    return series


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def curves_png(series: Sequence[Series], columns: int = 3) -> bytes:
    """One small axes per group, its lines labelled; PNG bytes."""
    groups = list(dict.fromkeys(s.group for s in series))
    cols = min(columns, len(groups))
    rows = -(-len(groups) // cols)
    figure = _figure(3.6 * cols, 2.6 * rows)
    for i, group in enumerate(groups):
        axes = figure.add_subplot(rows, cols, i + 1)
        members = [s for s in series if s.group == group]
        for line in members:
            axes.plot(line.x, line.y, label=line.label, marker="." if len(line.x) < 30 else None)
        axes.set_title(group, fontsize=10)
        axes.set_xlabel(members[0].x_name, fontsize=8)
        axes.tick_params(labelsize=8)
        axes.grid(alpha=0.3)
        if len(members) > 1 or members[0].label != group:
            axes.legend(fontsize=8)
    return _png(figure)


def confusion_png(plot: Plot, root: Path) -> bytes | None:
    """A confusion-matrix plot (DVC's `confusion` template: one record per sample) as a heat map."""
    path = root / plot.files[0]
    if not path.is_file():
        return None
    table = read_records(path)
    actual, predicted = str(plot.props.get("x", "actual")), str(plot.props.get("y", "predicted"))
    if actual not in table or predicted not in table:
        return None
    labels = sorted(set(table[actual].astype(str)) | set(table[predicted].astype(str)))
    index = {label: i for i, label in enumerate(labels)}
    counts = np.zeros((len(labels), len(labels)), int)
    for a, p in zip(table[actual].astype(str), table[predicted].astype(str), strict=True):
        counts[index[a], index[p]] += 1
    side = min(7.0, 2.5 + 0.25 * len(labels))
    figure = _figure(side + 1, side)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8)
    axes.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    axes.set_yticks(range(len(labels)), labels, fontsize=7)
    axes.set_xlabel(predicted)
    axes.set_ylabel(actual)
    axes.set_title(f"{plot.props.get('title') or Path(plot.id).stem} ({len(table)} samples)", fontsize=10)
    if len(labels) <= 20:
        for (r, c), value in np.ndenumerate(counts):
            if value:
                color = "white" if value > counts.max() / 2 else "black"
                axes.text(c, r, str(value), ha="center", va="center", fontsize=7, color=color)
    return _png(figure)


def _layers(names: Sequence[str], edges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Depth of each stage: the length of the longest upstream chain."""
    depth: dict[str, int] = {}
    for name in names:  # names come in topological order
        depth[name] = max((depth.get(up, 0) + 1 for up, down in edges if down == name), default=0)
    return depth


def dag_svg(names: Sequence[str], edges: Sequence[tuple[str, str]]) -> str:
    """The stage graph drawn top-down as inline SVG: one row per depth, arrows from upstream to downstream."""
    depth = _layers(names, edges)
    rows: dict[int, list[str]] = {}
    for name in names:
        rows.setdefault(depth[name], []).append(name)
    box_w, box_h, gap_x, gap_y = 150, 34, 30, 46
    width = max(len(r) for r in rows.values()) * (box_w + gap_x) + gap_x + 2 * box_w  # room for bent edges
    height = len(rows) * (box_h + gap_y) + gap_y
    centre: dict[str, tuple[float, float]] = {}
    for level, members in rows.items():
        span = len(members) * (box_w + gap_x) - gap_x
        for i, name in enumerate(members):
            centre[name] = ((width - span) / 2 + i * (box_w + gap_x) + box_w / 2, gap_y + level * (box_h + gap_y))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="pipeline DAG" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#667"/></marker></defs>',
    ]
    bends = 0
    for up, down in edges:
        (x1, y1), (x2, y2) = centre[up], centre[down]
        y1, y2 = y1 + box_h, y2 - 1
        if depth[down] - depth[up] == 1:
            mid = (y1 + y2) / 2
            path, style = f"M{x1:.0f},{y1:.0f} C{x1:.0f},{mid:.0f} {x2:.0f},{mid:.0f} {x2:.0f},{y2:.0f}", ""
        else:  # an edge that skips rows bends out to the side, past the boxes between, and is drawn lighter
            side = 1 if (x1 + x2) / 2 >= width / 2 else -1
            bends += 1
            x_out = (max(x1, x2) if side > 0 else min(x1, x2)) + side * (box_w * 0.8 + 8 * bends)
            path = f"M{x1:.0f},{y1:.0f} C{x_out:.0f},{y1 + gap_y:.0f} {x_out:.0f},{y2 - gap_y:.0f} {x2:.0f},{y2:.0f}"
            style = ' stroke-dasharray="5,3" opacity="0.6"'
        parts.append(f'<path d="{path}" fill="none" stroke="#667" stroke-width="1.3"{style} marker-end="url(#arrow)"/>')
    for name, (x, y) in centre.items():
        parts.append(
            f'<a href="#stage-{escape(name)}"><rect x="{x - box_w / 2:.0f}" y="{y:.0f}" width="{box_w}" '
            f'height="{box_h}" rx="6" fill="#eef3fb" stroke="#3a5a8c"/><text x="{x:.0f}" y="{y + box_h / 2 + 5:.0f}" '
            f'text-anchor="middle" font-family="monospace" font-size="14" fill="#1d2b44">{escape(name)}</text></a>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def dag_mermaid(names: Sequence[str], edges: Sequence[tuple[str, str]]) -> str:
    """The same graph as Mermaid text, in the shape `dvc dag --mermaid` prints."""
    ids = {name: f"node{i + 1}" for i, name in enumerate(names)}
    lines = ["flowchart TD"] + [f'\t{ids[n]}["{n}"]' for n in names]
    lines += [f"\t{ids[up]}-->{ids[down]}" for up, down in edges]
    return "\n".join(lines)
