"""`dvc.yaml` tells the truth: every `pipeline/` file a stage imports (transitively) is among that stage's deps."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from pipeline.core.reuse import PACKAGE_ROOT, file_sources

REPO = PACKAGE_ROOT.parent
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def stage_file(cmd: str) -> Path:
    match = re.search(r"python -m (stages\.\w+)", cmd)
    assert match, f"stage command {cmd!r} is not `python -m stages.<name>`"
    return REPO / (match.group(1).replace(".", "/") + ".py")


def docstring_only(path: Path) -> bool:
    """A package `__init__.py` that holds only its docstring cannot change a result."""
    body = ast.parse(path.read_text()).body
    return path.name == "__init__.py" and all(isinstance(node, ast.Expr) for node in body)


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or (dep.endswith("/") and path.startswith(dep)) for dep in deps)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_list_every_imported_pipeline_file(name: str) -> None:
    stage = STAGES[name]
    entry = stage_file(stage["cmd"])
    deps = [str(dep) for dep in stage.get("deps", [])]
    relative_entry = entry.relative_to(REPO).as_posix()
    assert relative_entry in deps, f"stage {name}: its entry point {relative_entry} is not in deps"
    imported = [path.relative_to(REPO).as_posix() for path in file_sources(entry) if not docstring_only(path)]
    missing = [path for path in imported if not covered(path, deps)]
    assert not missing, f"stage {name} imports these pipeline files but dvc.yaml does not list them: {missing}"


def test_deps_checker_catches_a_missing_module(tmp_path: Path) -> None:
    entry = tmp_path / "stage.py"
    entry.write_text("from pipeline.faces.align_run import run_align\n")
    sources = {p.relative_to(REPO).as_posix() for p in file_sources(entry)}
    assert "pipeline/faces/detect.py" in sources  # align_run -> align -> detect
    assert not covered("pipeline/faces/detect.py", ["pipeline/faces/align_run.py", "pipeline/sandbox/"])
    assert covered("pipeline/sandbox/avatar.py", ["pipeline/sandbox/"])


@pytest.mark.parametrize("name", ["pretrain_f", "train_cam", "train_dcgan", "train_dtn"])
def test_training_stages_keep_their_plots_across_a_resume(name: str) -> None:
    """DVC deletes a stage's outputs before it runs unless they persist. A training stage that resumes from its
    checkpoint must keep the curves and the images of the steps before the resume (the DTN's per-interval grids,
    the DCGAN's GIF frames); a fresh run clears them itself (pipeline.train.live)."""
    plots = [next(iter(p.items())) for p in STAGES[name].get("plots", []) if isinstance(p, dict)]
    live = {path: spec for path, spec in plots if path.endswith(("/plots/metrics", "/plots/images"))}
    assert len(live) == 2, plots
    assert all(spec.get("persist") for spec in live.values()), {p: s.get("persist") for p, s in live.items()}
