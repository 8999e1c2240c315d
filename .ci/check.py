"""Pipeline checks that CI runs and `make check` runs locally: params, dvc.yaml keys, and the committed lock.

Usage: python .ci/check.py   (from the repository root, with the project's venv first on PATH)
Exits 1 with one line per problem.
"""

from __future__ import annotations

import compileall
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core.params import ParamsError, load_params  # noqa: E402


def _has_key(tree: object, dotted: str) -> bool:
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def check_params() -> list[str]:
    """params.yaml validates, and every key dvc.yaml names (params lists, ${…} interpolations) exists in it."""
    try:
        load_params(ROOT / "params.yaml")
    except ParamsError as exc:
        return [str(exc)]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    text = (ROOT / "dvc.yaml").read_text()
    problems = [f"dvc.yaml uses ${{{key}}}, not in params.yaml" for key in re.findall(r"\$\{([\w.]+)\}", text)
                if not _has_key(params, key)]  # fmt: skip
    for name, stage in yaml.safe_load(text)["stages"].items():
        for entry in stage.get("params", []):
            keys = entry if isinstance(entry, str) else None
            if keys is not None and not _has_key(params, keys):
                problems.append(f"stage {name} lists param {keys!r}, not in params.yaml")
    return problems


def _outs(lock: dict) -> set[str]:
    return {out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def check_lock_in_sync() -> list[str]:
    """In a fresh copy of the tracked files, with bytecode written into pipeline/, `dvc status` may report missing
    outputs (no data yet) but never a changed code dependency or param: the committed dvc.lock matches the code."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp)
        for name in filter(None, tracked.decode().split("\0")):
            if (ROOT / name).is_file():
                (clone / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, clone / name)
        compileall.compile_dir(clone / "pipeline", quiet=1)  # what any import does on a normal machine
        subprocess.run(["git", "init", "-q"], cwd=clone, check=True)
        result = subprocess.run(["dvc", "status", "--json"], cwd=clone, capture_output=True, text=True)
        if result.returncode != 0:
            return [f"dvc status failed: {result.stderr.strip()}"]
        status = json.loads(result.stdout or "{}")
    produced = _outs(yaml.safe_load((ROOT / "dvc.lock").read_text()))
    problems = []
    for stage, changes in status.items():
        for change in changes:
            if not isinstance(change, dict):
                problems.append(f"{stage}: {change}")
                continue
            for path, state in change.get("changed deps", {}).items():
                if path in produced and state == "deleted":
                    continue  # another stage's output, not there before `dvc repro`
                problems.append(f"{stage}: dep {path} {state} since dvc.lock was committed; run `dvc repro` and commit")
    return problems


def main() -> int:
    problems = check_params() + check_lock_in_sync()
    for problem in problems:
        print(f"check: {problem}", file=sys.stderr)
    print(f"check: {'FAILED' if problems else 'ok'} (params, dvc.yaml keys, dvc.lock in sync with code and params)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
