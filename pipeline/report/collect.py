"""What dvc.yaml declares, read through DVC itself: stages and their edges, metrics now and at a baseline, plots."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")
OTHER = "other"  # the section for metrics and plots that no stage's outputs contain


@dataclass(frozen=True)
class Plot:
    """One plot definition of dvc.yaml, resolved by DVC: an image file, or curves from data files.

    Attributes:
        id: the plot's path, or its name for a top-level plot whose `y` maps files to fields.
        props: DVC's plot properties (x, y, template, title, …).
        files: the data or image files it reads.
    """

    id: str
    props: Mapping[str, Any]
    files: tuple[str, ...]

    @property
    def is_image(self) -> bool:
        return all(f.lower().endswith(IMAGE_SUFFIXES) for f in self.files)


@dataclass
class StageView:
    """One stage as the report shows it."""

    name: str
    upstream: tuple[str, ...] = ()
    metrics: dict[str, Any] = field(default_factory=dict)  # metrics file -> its (nested) values now
    baseline: dict[str, Any] = field(default_factory=dict)  # metrics file -> values at the baseline revision
    plots: list[Plot] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # image files the stage declares as plain outputs


@dataclass
class PipelineView:
    """The whole pipeline: stages in DAG order, edges (upstream, downstream), and the baseline it is compared to."""

    stages: list[StageView]
    edges: list[tuple[str, str]]
    baseline_rev: str | None  # the resolved commit or a saved run's folder; None when there is none to compare with
    baseline_note: str  # what the baseline is, or why there is none
    params_now: dict[str, Any]
    params_then: dict[str, Any]

    def stage(self, name: str) -> StageView | None:
        return next((s for s in self.stages if s.name == name), None)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def summary(view: PipelineView, exclude: Iterable[str] = ()) -> dict[str, float | int]:
    """Every stage's numeric metrics in one flat mapping {"<stage>.<key.path>": number}, in DAG order."""
    skip = set(exclude)
    flat: dict[str, float | int] = {}
    for stage in view.stages:
        for path, values in stage.metrics.items():
            if path in skip or not isinstance(values, Mapping):
                continue
            for key, value in flatten(values).items():
                if is_number(value):
                    flat[f"{stage.name}.{key}"] = value
    return flat


def _owner(path: str, outs: Mapping[str, str]) -> str:
    """The stage whose output is `path` or a folder holding it."""
    for out, stage in sorted(outs.items(), key=lambda item: -len(item[0])):
        if path == out or path.startswith(out.rstrip("/") + "/"):
            return stage
    return OTHER


def _metric_data(result: Mapping[str, Any], rev: str) -> dict[str, Any]:
    files = result.get(rev, {}).get("data", {})
    return {path: entry["data"] for path, entry in files.items() if "data" in entry}


def _params_data(result: Mapping[str, Any], rev: str) -> dict[str, Any]:
    files = result.get(rev, {}).get("data", {})
    merged: dict[str, Any] = {}
    for path, entry in files.items():
        prefix = "" if path == "params.yaml" else f"{path}:"
        merged.update({prefix + k: v for k, v in flatten(entry.get("data", {})).items()})
    return merged


def _saved_metrics(folder: Path, declared: Iterable[str]) -> dict[str, Any]:
    """The metrics files of a run saved under `folder`, at the same relative paths as the workspace's."""
    files = {path: folder / path for path in declared}
    return {path: json.loads(file.read_text()) for path, file in files.items() if file.is_file()}


def _saved_params(folder: Path) -> dict[str, Any]:
    """The params.yaml a saved run was made with, flattened; empty when the folder has none."""
    file = folder / "params.yaml"
    return flatten(yaml.safe_load(file.read_text()) or {}) if file.is_file() else {}


def _plots(repo: Any) -> list[Plot]:
    """Every plot definition (stage `plots:` and top-level `plots:`), folders unpacked, as DVC resolves them."""
    found: list[Plot] = []
    for revision in repo.plots.collect():
        definitions = revision.get("workspace", {}).get("definitions", {}).get("data", {})
        for config in definitions.values():
            for plot_id, props in config.get("data", {}).items():
                props = dict(props or {})
                y = props.get("y")
                files = tuple(y) if isinstance(y, Mapping) else (plot_id,)
                found.append(Plot(plot_id, props, files))
    return sorted(found, key=lambda plot: plot.id)


def _topological(names: list[str], edges: list[tuple[str, str]]) -> list[str]:
    """Stages ordered so that every stage follows its upstream ones; ties keep dvc.yaml's order."""
    order: list[str] = []
    remaining = list(names)
    while remaining:
        ready = [n for n in remaining if all(up in order for up, down in edges if down == n)]
        order.append((ready or remaining)[0])
        remaining.remove(order[-1])
    return order


def collect(root: Path, baseline: str) -> PipelineView:
    """Read the pipeline at `root` through DVC's API: no `dvc` subprocess, no lock (safe inside `dvc repro`)."""
    from dvc.repo import Repo
    from dvc.scm import SCMError, resolve_rev

    with Repo(str(root)) as repo:
        stages = [s for s in repo.index.stages if getattr(s, "name", None)]
        outs = {str(out.def_path): stage.name for stage in stages for out in stage.outs}
        edges = sorted({(up.name, down.name) for down, up in repo.index.graph.edges if up.name and down.name})
        views = {stage.name: StageView(stage.name, tuple(u for u, d in edges if d == stage.name)) for stage in stages}
        for stage in stages:
            for out in stage.outs:
                path = str(out.def_path)
                if not out.metric and not out.plot and path.lower().endswith(IMAGE_SUFFIXES):
                    views[stage.name].images.append(path)

        saved = root / baseline
        is_saved = saved.is_dir()  # a run saved as files (profiles/hour): its metrics at the paths dvc.yaml declares
        rev: str | None = None
        if is_saved:
            rev, note = baseline, f"{baseline} (saved run)"
        else:
            try:
                rev = resolve_rev(repo.scm, baseline)
                note = f"{baseline} ({rev[:10]})"
            except SCMError:  # no git history yet, or a revision that does not exist
                note = f"no baseline: {baseline!r} is neither a commit nor a saved run's folder"
        revs = [baseline] if rev and not is_saved else None
        metrics = repo.metrics.show(revs=revs, hide_workspace=False)
        params = repo.params.show(revs=revs, hide_workspace=False)
        now_key = "workspace" if revs else ""
        metrics_now, params_now = _metric_data(metrics, now_key), _params_data(params, now_key)
        if is_saved:
            metrics_then, params_then = _saved_metrics(saved, metrics_now), _saved_params(saved)
        else:
            metrics_then = _metric_data(metrics, baseline) if rev else {}
            params_then = _params_data(params, baseline) if rev else {}
        plots = _plots(repo)

    for path in sorted(metrics_now.keys() | metrics_then.keys()):
        view = views.setdefault(_owner(path, outs), StageView(_owner(path, outs)))
        if path in metrics_now:
            view.metrics[path] = metrics_now[path]
        if path in metrics_then:
            view.baseline[path] = metrics_then[path]
    for plot in plots:
        views.setdefault(_owner(plot.files[0], outs), StageView(OTHER)).plots.append(plot)
    order = _topological([s.name for s in stages], edges) + ([OTHER] if OTHER in views else [])
    return PipelineView([views[n] for n in order], edges, rev, note, params_now, params_then)
