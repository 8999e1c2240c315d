"""dvc.yaml lists, for every `python -m stages.X` stage, each pipeline/ file that the stage imports transitively."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from pipeline.core.reuse import PACKAGE_ROOT, module_sources

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
# The data stages' deps were written before the layout refactor; they are being reworked on another branch.
KNOWN_GAPS = {"crawl_faces", "crawl_avatars", "align", "pack"}


def stage_imports(path: Path) -> set[str]:
    """The modules a stage file's import statements name (module and module.name for `from m import name`)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def stage_sources(module: str) -> set[str]:
    """Repository-relative paths of the pipeline/ files a stage module imports, transitively."""
    files: set[Path] = set()
    for name in stage_imports(REPO / (module.replace(".", "/") + ".py")):
        files.update(module_sources(name))
    return {path.relative_to(PACKAGE_ROOT.parent).as_posix() for path in files}


@pytest.mark.parametrize("name", [n for n, s in STAGES.items() if re.fullmatch(r"python -m stages\.\w+", s["cmd"])])
def test_stage_deps_cover_every_imported_pipeline_file(name: str) -> None:
    module = STAGES[name]["cmd"].split()[-1]
    deps = [str(d) for d in STAGES[name]["deps"]]
    assert module.replace(".", "/") + ".py" in deps, f"{name}: dvc.yaml deps lack the stage file"

    def covered(path: str) -> bool:
        return any(path == dep or (dep.endswith("/") and path.startswith(dep)) for dep in deps)

    missing = sorted(path for path in stage_sources(module) if not covered(path))
    if missing and name in KNOWN_GAPS:
        pytest.xfail(f"{name} lacks deps {missing} (known; fixed with the data stages' rework)")
    assert not missing, f"dvc.yaml stage {name!r} imports these files but does not list them as deps: {missing}"
