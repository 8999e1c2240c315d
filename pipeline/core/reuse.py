"""The one reuse rule: an earlier result is reused only when its key (input, shaping params, code version) matches."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

PACKAGE = "pipeline"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def _module_path(module: str) -> Path | None:
    """The source file of a `pipeline.*` module or package, or None when it is not ours."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    parts = module.split(".")[1:]
    candidates = [PACKAGE_ROOT / "__init__.py"]
    if parts:
        candidates = [
            PACKAGE_ROOT.joinpath(*parts[:-1], parts[-1] + ".py"),
            PACKAGE_ROOT.joinpath(*parts, "__init__.py"),
        ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path, module: str) -> set[str]:
    """Every module an import statement in `path` names, at any depth (function-local imports count too)."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = (
                importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                if node.level
                else node.module
            )
            if base is None:
                continue
            names.add(base)
            # `from pipeline.core import traits` imports the submodule `pipeline.core.traits`.
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@cache
def module_sources(module: str) -> tuple[Path, ...]:
    """The `pipeline/` source files that `module` imports, transitively, itself and parent packages included."""
    seen: dict[str, Path] = {}
    pending = [module]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        path = _module_path(name)
        if path is None:
            continue
        seen[name] = path
        pending.extend(_imported_modules(path, name))
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
        parts = name.split(".")
        pending.extend(".".join(parts[:i]) for i in range(1, len(parts)))
    return tuple(sorted(set(seen.values())))


def file_sources(path: Path) -> tuple[Path, ...]:
    """The `pipeline/` source files that a script outside the package (a stage entry point) imports, transitively."""
    found: set[Path] = set()
    for name in _imported_modules(path, "__main__"):
        found.update(module_sources(name))
    return tuple(sorted(found))


# Sources that never shape a result by themselves: params.py only validates, and what it yields is in every key
# as resolved values; runner.py turns errors into messages and writes the run log. Leaving them out keeps a new
# params section or a reworded message from recomputing every earlier result.
NOT_SHAPING = ("core/params.py", "core/runner.py")


@cache
def code_version(*modules: str) -> str:
    """A short hash of every source file the given modules import: editing any of them changes it."""
    digest = hashlib.sha256()
    sources = {p for module in modules for p in module_sources(module)}
    for path in sorted(p for p in sources if p.relative_to(PACKAGE_ROOT).as_posix() not in NOT_SHAPING):
        digest.update(path.relative_to(PACKAGE_ROOT.parent).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal params always hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def shaping_params(section: Mapping[str, Any], ignore: Iterable[str]) -> dict[str, Any]:
    """The params of a section that shape a result: all of them except the named ones (paths, workers, …)."""
    skip = set(ignore)
    return {key: value for key, value in section.items() if key not in skip}


def result_key(input_id: str, params: Mapping[str, Any], code: str) -> str:
    """The key of one derived result: its input's identity (usually sha256), the shaping params and the code."""
    payload = canonical_json({"input": input_id, "params": params, "code": code})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:24]
