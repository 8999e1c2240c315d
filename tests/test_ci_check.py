"""CI's pipeline checks (.ci/check.py): metric gates, the smoke params, and which stages an experiment may re-run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("ci_check", REPO / ".ci/check.py")
check = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
sys.modules["ci_check"] = check
spec.loader.exec_module(check)  # type: ignore[union-attr]


def test_a_regressed_metric_fails_with_a_readable_table() -> None:
    gates = {"pretrain_f.test_top1": {"min": 0.9}, "dtn.median_rank": {"max": 5}, "pack.identities": {"min": 4}}
    table, problems = check.gate_table(
        {"pretrain_f.test_top1": 0.85, "dtn.median_rank": 3, "pack.identities": 4}, gates
    )
    assert problems == ["gate pretrain_f.test_top1: below min (value 0.85, min 0.9, max None)"]
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "value", "min", "max"]
    assert lines[1].split() == ["pretrain_f.test_top1", "0.85", "0.9", "FAIL:", "below", "min"]
    assert lines[2].split() == ["dtn.median_rank", "3", "5", "ok"]
    _, problems = check.gate_table({"dtn.median_rank": 7}, {"dtn.median_rank": {"max": 5}})
    assert problems == ["gate dtn.median_rank: above max (value 7, min None, max 5)"]


def test_a_missing_metric_or_a_misspelt_bound_fails() -> None:
    _, problems = check.gate_table({}, {"align.faces.detection_rate": {"min": 0.7}})
    assert problems == ["gate align.faces.detection_rate: metric missing (value None, min 0.7, max None)"]
    _, problems = check.gate_table({"a": 1}, {"a": {"minimum": 0}})
    assert problems == ["gate a: bounds must be min and/or max, got ['minimum']"]


def test_committed_gates_and_the_experiment_key_are_well_formed() -> None:
    gates = yaml.safe_load((REPO / ".ci/gates.yaml").read_text())["gates"]
    assert gates and all(set(b) <= {"min", "max"} and b for b in gates.values())
    node = yaml.safe_load((REPO / "params.yaml").read_text())
    for part in check.EXPERIMENT.partition("=")[0].split("."):
        node = node[part]  # the experiment's key exists


def test_ran_stages_reads_dvc_output() -> None:
    output = (
        "Stage 'align' didn't change, skipping\nRunning stage 'pack':\n> python -m stages.pack\nRunning stage 'report':"
    )
    assert check.ran_stages(output) == {"pack", "report"}


@pytest.fixture(scope="module")
def tracked_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = check.copy_tracked(tmp_path_factory.mktemp("tracked"))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


@pytest.mark.parametrize(
    ("key", "readers"),
    [
        ("pack.test_fraction", {"pack"}),
        ("crawl.avatars.count", {"crawl_avatars"}),
        ("align.out_dir", {"align", "pack"}),
        ("sandbox.seed", {"crawl_faces"}),
        ("sandbox.faults.seed", {"crawl_faces", "crawl_avatars"}),
    ],
)
def test_readers_of_a_param_and_what_lies_downstream(tracked_copy: Path, key: str, readers: set[str]) -> None:
    found, downstream = check.readers_and_descendants(tracked_copy, key)
    assert found == readers | {"report"}  # the report depends on params.yaml as a whole: it lists what changed
    stages = yaml.safe_load((tracked_copy / "dvc.yaml").read_text())["stages"]
    assert found | downstream <= set(stages)
    assert not found & downstream
    if "crawl_avatars" in readers:
        assert {"align", "pack"} <= downstream
