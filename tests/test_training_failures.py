"""A failed or stopped training run keeps what the last good run saved, and says what happened in one line.

Drills on `pretrain_f` at tiny scale (every training stage runs through the same skeleton): a bad param, a full disk
(RLIMIT_FSIZE, as `ulimit -f` gives), Ctrl-C and kill -9 mid-run. DVC's own part (it deletes a stage's outputs
before running it unless they persist) is checked on dvc.yaml here and end to end in test_e2e_dvc.py.
"""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_tiny_faces
from test_pretrain_f import env, stage, workdir

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
SAVED = ("models/f.pt", "metrics/pretrain_f.json", "reports/details/pretrain_f.json")
CHECKPOINT = "models/checkpoints/pretrain_f/last.pt"

SIGNAL_AT_STEP = """
import os, signal
from pipeline.train import live
log = live.LiveLog.log
def log_then_signal(self, step, metrics):
    log(self, step, metrics)
    if step == {step}:
        os.kill(os.getpid(), signal.{signal})
live.LiveLog.log = log_then_signal
from stages.pretrain_f import main
main()
"""


def snapshot(root: Path, paths: tuple[str, ...]) -> dict[str, bytes]:
    return {path: (root / path).read_bytes() for path in paths}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One finished run (and its shards): its model, metrics, details and checkpoint are what a drill must keep."""
    shards = make_tiny_faces(tmp_path_factory.mktemp("shards") / "shards" / "faces").parent
    root = workdir(tmp_path_factory.mktemp("finished") / "run", shards, steps=12)
    stage(root)
    return root, shards


@pytest.fixture
def trained(finished: tuple[Path, Path], tmp_path: Path) -> Path:
    """A copy of the finished run for one drill."""
    return Path(shutil.copytree(finished[0], tmp_path / "run"))


@pytest.fixture
def tiny_faces(finished: tuple[Path, Path]) -> Path:
    return finished[1]


def changed(root: Path, tiny_faces: Path) -> None:
    """Another learning rate: the next run trains afresh (a new run key), over the last good outputs."""
    workdir(root, tiny_faces, steps=12, lr=0.004)


@pytest.mark.parametrize("name", ["pretrain_f", "train_cam", "train_dcgan", "train_dtn"])
def test_dvc_keeps_a_training_stage_s_model_and_details_until_a_run_succeeds(name: str) -> None:
    outs = {next(iter(o)) if isinstance(o, dict) else o: o for o in STAGES[name]["outs"]}
    section = {"pretrain_f": "pretrain_f", "train_cam": "cam", "train_dcgan": "dcgan", "train_dtn": "dtn"}[name]
    for key in ("model", "details"):
        spec = outs[f"${{{section}.{key}}}"]
        assert isinstance(spec, dict) and spec[f"${{{section}.{key}}}"].get("persist"), (name, key)


def test_a_bad_param_changes_nothing(trained: Path) -> None:
    before = snapshot(trained, (*SAVED, CHECKPOINT))
    params = yaml.safe_load((trained / "params.yaml").read_text())
    params["pretrain_f"]["steps"] = "twelve"
    (trained / "params.yaml").write_text(yaml.safe_dump(params))
    result = stage(trained, check=False)
    assert result.returncode == 1 and "pretrain_f.steps: Input should be a valid integer" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(trained, (*SAVED, CHECKPOINT)) == before


def test_a_full_disk_is_one_line_naming_the_file_and_the_run_log_records_it(trained: Path, tiny_faces: Path) -> None:
    before = snapshot(trained, (*SAVED, CHECKPOINT))
    limit = (trained / CHECKPOINT).stat().st_size // 2  # room for the curves and grids, not for a checkpoint
    changed(trained, tiny_faces)
    result = subprocess.run(
        [sys.executable, "-m", "stages.pretrain_f"],
        cwd=trained,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )
    assert result.returncode == 1, result.stderr
    failure = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(failure) == 1 and failure[0].startswith("[pretrain_f] failed: "), result.stderr
    assert "could not be written: File too large" in failure[0] and "free some space and re-run" in failure[0]
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert snapshot(trained, (*SAVED, CHECKPOINT)) == before  # the last good run's files, the checkpoint included
    log = json.loads((trained / "reports/runs/pretrain_f.json").read_text())
    assert log["status"] == "failed" and "could not be written" in log["message"]


@pytest.mark.parametrize(("sig", "code", "said"), [("SIGINT", 130, "interrupted"), ("SIGKILL", -9, "")])
def test_ctrl_c_or_kill_9_mid_run_keeps_the_last_good_model(
    trained: Path, tiny_faces: Path, sig: str, code: int, said: str
) -> None:
    before = snapshot(trained, SAVED)
    changed(trained, tiny_faces)
    (trained / "driver.py").write_text(SIGNAL_AT_STEP.format(step=9, signal=sig))
    result = subprocess.run(
        [sys.executable, "driver.py"],
        cwd=trained,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert result.returncode == code, result.stderr
    assert said in result.stderr and "Traceback" not in result.stderr
    assert snapshot(trained, SAVED) == before
    again = stage(trained)  # the next run resumes the stopped one's checkpoint and only then replaces the model
    assert "resuming from step 6" in again.stdout
    assert (trained / "models/f.pt").read_bytes() != before["models/f.pt"]
