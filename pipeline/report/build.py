"""Build the report: collect what dvc.yaml declares, draw it, write the page and the flat summary of metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.params import Params
from pipeline.core.runner import write_metrics
from pipeline.core.storage import atomic_write_text
from pipeline.report.collect import OTHER, PipelineView, collect, summary
from pipeline.report.figures import (
    CONFUSION_TEMPLATES,
    confusion_png,
    curve_series,
    curves_png,
    dag_mermaid,
    dag_svg,
    data_uri,
    image_uri,
    jpeg,
)
from pipeline.report.page import Visual, render
from pipeline.report.sheets import SHEETS


def stage_visuals(view: PipelineView, params: Params, root: Path) -> dict[str, list[Visual]]:
    """Per stage: its curves, confusion matrices, declared images, then its sample sheets, for what exists."""
    visuals: dict[str, list[Visual]] = {}
    for stage in view.stages:
        shown: list[Visual] = []
        curve_plots = [p for p in stage.plots if not p.is_image and p.props.get("template") not in CONFUSION_TEMPLATES]
        series = [line for plot in curve_plots for line in curve_series(plot, root)]
        if series:
            files = sorted({f for plot in curve_plots for f in plot.files})
            caption = f"from {', '.join(files[:4])}{' …' if len(files) > 4 else ''}"
            shown.append(Visual("Training curves", caption, data_uri(curves_png(series), "image/png")))
        for plot in stage.plots:
            if plot.props.get("template") in CONFUSION_TEMPLATES and (png := confusion_png(plot, root)):
                shown.append(Visual("Confusion matrix", plot.files[0], data_uri(png, "image/png")))
        images = [f for p in stage.plots if p.is_image for f in p.files] + stage.images
        shown += [Visual(Path(f).name, f, image_uri(root / f)) for f in images if (root / f).is_file()]
        if stage.name != OTHER:
            for make in SHEETS.get(stage.name, ()):
                if sheet := make(params, root, params.report.samples):
                    shown.append(Visual(sheet.title, sheet.caption, data_uri(jpeg(sheet.image), "image/jpeg")))
        visuals[stage.name] = shown
    return visuals


def build_report(params: Params, root: Path = Path(".")) -> dict[str, Any]:
    """Write `report.out` (the page) and `report.summary` (every stage's metrics, flat); return the summary."""
    section = params.report
    view = collect(root, section.baseline)
    exclude = {section.summary}
    names = [s.name for s in view.stages if s.name != OTHER]
    page = render(
        view,
        stage_visuals(view, params, root),
        dag_svg(names, view.edges),
        dag_mermaid(names, view.edges),
        exclude,
    )
    atomic_write_text(root / section.out, page)
    flat = summary(view, exclude)
    write_metrics(root / section.summary, flat)
    return {
        "stages": len(names),
        "metrics": len(flat),
        "page_bytes": len(page.encode()),
        "baseline": view.baseline_note,
    }
