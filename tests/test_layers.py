"""Imports point down the layer order of ARCHITECTURE.md, and no module borrows from a stage's own module."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.core.reuse import PACKAGE_ROOT, _imported_modules

REPO = PACKAGE_ROOT.parent
# Bottom to top; a module may import from its own layer and the layers below it.
LAYERS = (
    ("core",),
    ("sandbox", "crawl", "faces", "dataset"),
    ("models",),
    ("train", "evaluate"),
    ("infer", "report"),
    ("cli",),
)
LAYER_OF = {package: level for level, packages in enumerate(LAYERS) for package in packages}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every `pipeline.*` module an import statement in `path` names, function-local imports included (the reuse
    rule's own reading of imports, so the two never disagree)."""
    return {m for m in _imported_modules(path, module_name(path)) if m.startswith("pipeline.") and is_module(m)}


def is_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer(module: str) -> int | None:
    """The layer of `pipeline.<package>...`; None for the package itself."""
    parts = module.split(".")
    return LAYER_OF[parts[1]] if len(parts) > 1 else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """`importer -> imported` for every import that points up the layer order."""
    wrong = []
    for importer, imported in sorted(graph.items()):
        for target in sorted(imported):
            if layer(target) is not None and layer(target) > layer(importer):  # type: ignore[operator]
                wrong.append(f"{importer} -> {target}")
    return wrong


def stage_modules() -> set[str]:
    """The `pipeline` modules that a DVC stage entry point (stages/*.py) runs: each stage's own logic."""
    found: set[str] = set()
    for entry in (REPO / "stages").glob("*.py"):
        found |= {m for m in imports(entry) if not m.startswith(("pipeline.core.", "pipeline.train.skeleton"))}
    return {m for m in found if REPO.joinpath(*m.split(".")).with_suffix(".py").is_file()}


def borrowed_from_stages(graph: dict[str, set[str]], stages: set[str]) -> list[str]:
    """`importer -> stage module` where a module other than the CLI reaches into another stage's own module."""
    return [
        f"{importer} -> {target}"
        for importer, imported in sorted(graph.items())
        for target in sorted(imported & stages)
        if target != importer and importer != "pipeline.cli"
    ]


GRAPH = {module_name(path): imports(path) for path in PACKAGE_ROOT.rglob("*.py")}


def test_every_package_has_a_layer() -> None:
    packages = {path.parent.name for path in PACKAGE_ROOT.glob("*/__init__.py")} | {"cli"}
    assert packages == set(LAYER_OF), packages ^ set(LAYER_OF)


def test_imports_point_down_the_layer_order() -> None:
    assert upward_imports(GRAPH) == []


def test_no_module_imports_another_stage_s_own_module() -> None:
    stages = stage_modules()
    assert {"pipeline.train.pretrain_f", "pipeline.train.train_dtn", "pipeline.faces.align_run"} <= stages
    assert borrowed_from_stages(GRAPH, stages) == []


def test_the_checks_catch_what_they_forbid() -> None:
    """The two rules on a made-up graph: a model that imports training code, infer importing a stage's module."""
    graph = {
        "pipeline.models.dtn": {"pipeline.train.checkpoint", "pipeline.core.checkpoint"},
        "pipeline.infer.emojify": {"pipeline.train.train_dtn", "pipeline.models.dtn"},
        "pipeline.core.schema": {"pipeline.core.traits"},
    }
    assert upward_imports(graph) == ["pipeline.models.dtn -> pipeline.train.checkpoint"]
    assert borrowed_from_stages(graph, {"pipeline.train.train_dtn"}) == [
        "pipeline.infer.emojify -> pipeline.train.train_dtn"
    ]


@pytest.mark.parametrize("package", sorted(LAYER_OF))
def test_architecture_md_states_the_layer_of_every_package(package: str) -> None:
    text = (REPO / "ARCHITECTURE.md").read_text()
    order = re.search(r"Layer order[^\n]*\n((?:.+\n)+)", text)
    assert order, "ARCHITECTURE.md has no 'Layer order' paragraph"
    assert f"`{package}`" in order.group(1)
