"""Pipeline checks that CI runs and `make check` runs locally.

Usage (from the repository root, with the project's venv first on PATH):
  python .ci/check.py            params validate, dvc.yaml names only existing keys, dvc.lock matches the code
  python .ci/check.py smoke      a small-scale `dvc repro` of every stage in a temporary clone, then: `dvc status`
                                 clean, a second repro runs nothing, the metric gates (.ci/gates.yaml), the report in
                                 headless Chromium, `dvc push` to a remote and `dvc pull data/shards` in a second
                                 clone, and the experiment workflow (`dvc exp run -S`, which re-runs only the stages
                                 that read the param, then `dvc params diff` and `dvc metrics diff`)
  python .ci/check.py gates [metrics/summary.json]    the metric gates on an existing run
Exits 1 with one line per problem.
"""

from __future__ import annotations

import compileall
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core.params import ParamsError, load_params  # noqa: E402
from pipeline.core.profile import apply_profile  # noqa: E402

SMOKE = ROOT / ".ci/smoke.yaml"  # the smoke run's params profile (pipeline/core/profile.py)
GATES = ROOT / ".ci/gates.yaml"  # metric bounds at smoke scale
# The experiment CI runs on the smoke pipeline: one param changed with `dvc exp run -S`. Exactly the stages that
# read it re-run (and those whose inputs they change): the GAN stages' shared Adam learning rate.
EXPERIMENT = "train.lr=0.0001"


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


def copy_tracked(dest: Path) -> Path:
    """The repository's tracked files, as they are in the working tree, copied into `dest`."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def check_lock_in_sync() -> list[str]:
    """In a fresh copy of the tracked files, with bytecode written into pipeline/, `dvc status` may report missing
    outputs (no data yet) but never a changed code dependency or param: the committed dvc.lock matches the code."""
    with tempfile.TemporaryDirectory() as tmp:
        clone = copy_tracked(Path(tmp))
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
                inside = any(path == out or path.startswith(out.rstrip("/") + "/") for out in produced)
                if inside and state == "deleted":
                    continue  # another stage's output (or a file in one), not there before `dvc repro`
                problems.append(f"{stage}: dep {path} {state} since dvc.lock was committed; run `dvc repro` and commit")
    return problems


# ---- metric gates -------------------------------------------------------------------------------------------------


def gate_table(summary: dict[str, Any], gates: dict[str, dict[str, float]]) -> tuple[str, list[str]]:
    """Each gate (a `metrics/summary.json` key with `min` and/or `max`) against the run's value.

    Returns:
        A fixed-width table of every gate, and one line per gate that failed (missing metrics fail too).
    """
    rows, problems = [], []
    for key, bounds in gates.items():
        unknown = set(bounds) - {"min", "max"}
        if unknown or not bounds:
            problems.append(f"gate {key}: bounds must be min and/or max, got {sorted(bounds)}")
            continue
        value = summary.get(key)
        low, high = bounds.get("min"), bounds.get("max")
        if not isinstance(value, int | float) or isinstance(value, bool):
            verdict = "FAIL: metric missing"
        elif low is not None and value < low:
            verdict = "FAIL: below min"
        elif high is not None and value > high:
            verdict = "FAIL: above max"
        else:
            verdict = "ok"
        if verdict != "ok":
            problems.append(f"gate {key}: {verdict[6:]} (value {value}, min {low}, max {high})")
        rows.append((key, "—" if value is None else f"{value:g}", "" if low is None else f"{low:g}",
                     "" if high is None else f"{high:g}", verdict))  # fmt: skip
    header = ("metric", "value", "min", "max", "")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    lines = [
        "  ".join(
            cell.ljust(w) if i in (0, 4) else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines), problems


def check_gates(summary_path: Path) -> list[str]:
    if not summary_path.is_file():
        return [f"{summary_path} not found; the report stage writes it (dvc repro report)"]
    table, problems = gate_table(json.loads(summary_path.read_text()), yaml.safe_load(GATES.read_text())["gates"])
    print(f"metric gates ({GATES.relative_to(ROOT)}) on {summary_path}:\n{table}")
    return problems


# ---- the smoke run in a temporary clone ---------------------------------------------------------------------------


class Clone:
    """A throwaway git repository holding the working tree's tracked files, where `dvc` runs with our venv."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {**os.environ, "PYTHONPATH": str(root)}
        self.env.update(GIT_AUTHOR_NAME="ci", GIT_AUTHOR_EMAIL="ci@localhost")
        self.env.update(GIT_COMMITTER_NAME="ci", GIT_COMMITTER_EMAIL="ci@localhost")

    def run(self, *cmd: str, echo: bool = False) -> str:
        """Run a command in the clone; its output, echoed as it comes when `echo`. A failure ends the check."""
        start = time.monotonic()
        process = subprocess.Popen(cmd, cwd=self.root, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)  # fmt: skip
        lines = []
        for line in process.stdout or ():
            lines.append(line)
            if echo:
                print(line, end="", flush=True)
        if process.wait() != 0:
            tail = "" if echo else "".join(lines[-40:])
            raise SystemExit(f"check: `{' '.join(cmd)}` failed (exit {process.returncode}) in {self.root}\n{tail}")
        if echo:
            print(f"   ({' '.join(cmd)}: {time.monotonic() - start:.1f} s)", flush=True)
        return "".join(lines)

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-qm", message)


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def readers_and_descendants(root: Path, key: str) -> tuple[set[str], set[str]]:
    """The stages that read param `key` (a params entry above or below it, or the whole params file), and every stage
    downstream of them."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    def reads(entry: str) -> bool:
        return key == entry or key.startswith(entry + ".") or entry.startswith(key + ".")

    with Repo(str(root)) as repo:
        readers = set()
        for stage in repo.index.stages:
            for dep in stage.deps:
                whole_file = str(dep.def_path) == "params.yaml" and not isinstance(dep, ParamsDependency)
                if whole_file or (isinstance(dep, ParamsDependency) and any(reads(p) for p in dep.params)):
                    readers.add(stage.name)
        edges = {(up.name, down.name) for down, up in repo.index.graph.edges}
    downstream, frontier = set(), set(readers)
    while frontier:
        frontier = {down for up, down in edges if up in frontier} - downstream - readers
        downstream |= frontier
    return readers, downstream


def check_experiment(clone: Clone, assignment: str) -> list[str]:
    """`dvc exp run -S key=value` on the committed smoke run re-runs only what reads the key; the diffs show it."""
    key, _, value = assignment.partition("=")
    readers, downstream = readers_and_descendants(clone.root, key)
    ran = ran_stages(clone.run("dvc", "exp", "run", "-S", assignment, echo=True))
    problems = [f"experiment {assignment}: {stage} reads {key} but did not re-run" for stage in sorted(readers - ran)]
    problems += [f"experiment {assignment}: {stage} re-ran but neither reads {key} nor depends on a stage that does"
                 for stage in sorted(ran - readers - downstream)]  # fmt: skip
    print(f"experiment -S {assignment}: stages that read {key}: {sorted(readers)}; downstream: {sorted(downstream)}; "
          f"re-ran: {sorted(ran)}")  # fmt: skip
    params = json.loads(clone.run("dvc", "params", "diff", "--json"))
    change = next((c for file in params.values() for k, c in file.items() if k == key), None)
    if change is None or str(change.get("new")) != value:
        problems.append(f"`dvc params diff` does not show {key} -> {value}: {params}")
    metrics = json.loads(clone.run("dvc", "metrics", "diff", "--json"))
    if not any(metrics.values()):
        problems.append(f"`dvc metrics diff` shows no change after the experiment {assignment}")
    print(clone.run("dvc", "metrics", "diff"), end="")
    return problems


def check_remote(clone: Clone) -> list[str]:
    """The scale-out path: `dvc push` to a remote, and a second clone pulls only the shards (what training reads)."""
    remote, other = clone.root.parent / "remote", Clone(clone.root.parent / "trainer")
    clone.run("dvc", "remote", "add", "-d", "storage", str(remote))
    clone.run("dvc", "push", "-q")
    clone.run("git", "clone", "-q", str(clone.root), str(other.root))
    other.run("dvc", "remote", "add", "-d", "storage", str(remote))
    other.run("dvc", "pull", "-q", "data/shards")
    pulled = [p for p in (other.root / "data").rglob("*") if p.is_file()]
    pushed = sum(1 for p in remote.rglob("*") if p.is_file())
    print(f"pushed {pushed} objects to {remote.name}; the training clone pulled {len(pulled)} files of data/shards")
    status = other.run("dvc", "status", "--json", "pack")
    problems = (
        []
        if pulled and all(p.is_relative_to(other.root / "data/shards") for p in pulled)
        else [f"`dvc pull data/shards` into a fresh clone gave {len(pulled)} files outside or none inside data/shards"]
    )
    if '"changed outs"' in status:
        problems.append(f"the pulled shards differ from dvc.lock: {status}")
    return problems


def smoke() -> list[str]:
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="i2c-smoke-") as tmp:
        clone = Clone(copy_tracked(Path(tmp) / "clone"))  # the remote and a second clone go beside it
        apply_profile(clone.root / "params.yaml", SMOKE)
        clone.run("git", "init", "-q")
        clone.commit("smoke params")

        print(f"== smoke: dvc repro at small scale ({SMOKE.relative_to(ROOT)}) in {clone.root} ==", flush=True)
        clone.run("dvc", "repro", echo=True)
        # Up to date means up to date: with bytecode written by every import, nothing may look changed, and a
        # second repro runs no stage.
        clone.run(sys.executable, "-c", "import pipeline.cli")
        status = clone.run("dvc", "status", "--json").strip()
        if status != "{}":
            problems.append(f"dvc status is not clean after repro: {status}")
        if again := ran_stages(clone.run("dvc", "repro")):
            problems.append(f"a second dvc repro ran {sorted(again)}")

        print("== metric gates ==", flush=True)
        problems += check_gates(clone.root / "metrics/summary.json")

        print("== the report in a browser ==", flush=True)
        from pipeline.report import browser

        shot = os.environ.get("REPORT_SCREENSHOT")  # e.g. REPORT_SCREENSHOT=/tmp/report.png make check
        page, summary = clone.root / "reports/index.html", clone.root / "metrics/summary.json"
        code = browser.main([str(page), "--summary", str(summary), *(["--screenshot", shot] if shot else [])])
        if code == 2 and not os.environ.get("CI"):
            print("check: no Chromium here, the report's browser check is skipped (CI installs it)")
        elif code != 0:
            problems.append(f"the report at {page} failed its browser check")

        clone.commit("smoke run")
        print("== a DVC remote: dvc push, then dvc pull data/shards in a second clone ==", flush=True)
        problems += check_remote(clone)

        print(f"== experiment: dvc exp run -S {EXPERIMENT} ==", flush=True)
        problems += check_experiment(clone, EXPERIMENT)
    return problems


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "static"
    if command == "static":
        problems = check_params() + check_lock_in_sync()
        summary = "params, dvc.yaml keys, dvc.lock in sync with code and params"
    elif command == "smoke":
        problems, summary = smoke(), "smoke repro, clean status, no-op repro, gates, report in a browser, experiment"
    elif command == "gates":
        path = Path(argv[1]) if len(argv) > 1 else ROOT / "metrics/summary.json"
        problems, summary = check_gates(path), "metric gates"
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for problem in problems:
        print(f"check: {problem}", file=sys.stderr)
    print(f"check: {'FAILED' if problems else 'ok'} ({summary})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
