"""Build the report: collect what dvc.yaml declares, draw it, write the page and the flat summary of metrics."""

from __future__ import annotations

import re
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

MAX_IMAGES_PER_FOLDER = 6  # a folder of per-step grids shows this many, first to last


def _natural(path: str) -> list[Any]:
    """Sort key that puts step_2 before step_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def spread_images(files: list[str], root: Path, per_folder: int = MAX_IMAGES_PER_FOLDER) -> list[tuple[str, str]]:
    """The image files that exist, with captions; a folder of many (a grid per logging step) shows `per_folder` of
    them, evenly spread from its first to its last."""
    folders: dict[str, list[str]] = {}
    for file in files:
        if (root / file).is_file():
            folders.setdefault(str(Path(file).parent), []).append(file)
    picked: list[tuple[str, str]] = []
    for members in folders.values():
        members = sorted(members, key=_natural)
        if len(members) <= per_folder:
            picked += [(f, f) for f in members]
            continue
        step = (len(members) - 1) / (per_folder - 1)
        chosen = [members[round(i * step)] for i in range(per_folder)]
        picked += [(f, f"{f} ({per_folder} of the {len(members)} images in its folder)") for f in chosen]
    return picked


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
        shown += [Visual(Path(f).name, caption, image_uri(root / f)) for f, caption in spread_images(images, root)]
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


def docs_pictures(params: Params, out: Path, root: Path = Path(".")) -> list[Path]:
    """Copy the run's headline pictures into `out` (README's figures): the people | avatar grid, the photo -> emoji
    grid, the CAM overlays,
    the DCGAN's final grid and its GIF. Returns the files written; a picture the run has not made is skipped."""
    import shutil

    import cv2

    from pipeline.core.storage import atomic_write_bytes

    images = {
        "avatar_params_people.png": Path(params.avatar_params.live_dir) / "plots/images/people_avatars.png",
        "dtn_photo_emoji.png": Path(params.dtn.live_dir) / "plots/images/photo_emoji_final.png",
        "cam_overlays.jpg": Path(params.cam.live_dir) / "plots/images/test_overlays.png",
        "dcgan_samples.jpg": Path(params.dcgan.live_dir) / "plots/images/samples_final.png",
        "dcgan_training.gif": Path(params.dcgan.live_dir) / "plots/images/training.gif",
    }
    written = []
    for name, source in images.items():
        source = root / source
        if not source.is_file():
            continue
        target = Path(out) / name
        if target.suffix == source.suffix:
            shutil.copyfile(source, target)
        else:
            rgb = cv2.cvtColor(cv2.imread(str(source), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            atomic_write_bytes(target, jpeg(rgb))
        written.append(target)
    return written
