"""The pretrain_f stage on tiny shards: outputs, resume after kill -9, refusals, DDP over gloo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from pipeline.core.checkpoint import load_checkpoint
from pipeline.models.face_encoder import load_f

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "input_size": 64,
    "width": 0.125,
    "batch_size": 8,
    "steps": 24,
    "eval_every": 6,
    "checkpoint_every": 6,
    "log_every": 3,
    "optimizer": "adamw",
    "lr": 0.003,
    "weight_decay": 0.01,
    "warmup_steps": 2,
    "runtime": {"threads": 1},
    "avatars": {"weight": 0.0},  # identity alone: these shards have no avatars (the two-domain test below has)
}


def workdir(root: Path, shards: Path, **section: object) -> Path:
    """A folder with a params.yaml whose pretrain_f trains on `shards`; every output lands inside it."""
    root.mkdir(parents=True, exist_ok=True)
    params = {"pack": {"out_dir": str(shards)}, "pretrain_f": {**TINY, **section}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def stage(cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "stages.pretrain_f"], cwd=cwd, env=env(), capture_output=True, text=True, timeout=600
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["modules"]["model"]


def test_stage_writes_f_metrics_with_chance_and_plots(tmp_path: Path, tiny_faces: Path) -> None:
    run = workdir(tmp_path / "run", tiny_faces)
    out = stage(run).stdout
    assert "no checkpoint" in out and "test top-1" in out
    metrics = json.loads((run / "metrics/pretrain_f.json").read_text())
    assert set(metrics) == {"test_top1", "chance_top1", "test_top5", "chance_top5"}  # the rest is in the details
    assert metrics["chance_top1"] == 0.25 and metrics["chance_top5"] == 1.0 and metrics["test_top1"] >= 0.75
    details = json.loads((run / "reports/details/pretrain_f.json").read_text())
    assert details["data"] == {"identities": 4, "train_images": 96, "test_images": 16}
    assert details["majority_top1"] == 0.25 and details["selected"]["step"] in (6, 12, 18, 24)
    encoder = load_f(run / "models/f.pt")
    assert encoder.labels == [f"person_{i}" for i in range(4)] and encoder.info["params"]["width"] == 0.125
    assert encoder.info["metrics"] == metrics and encoder.info["align"]["size"] == 152
    f = encoder.embed(torch.zeros(2, 40, 40, 3, dtype=torch.uint8))
    assert f.shape == (2, encoder.net.embed_dim) and torch.allclose(f.norm(dim=1), torch.ones(2), atol=1e-5)
    live = run / "reports/pretrain_f"
    steps = [int(line.split("\t")[0]) for line in (live / "plots/metrics/train/loss.tsv").read_text().splitlines()[1:]]
    assert steps == list(range(3, 25, 3))
    assert (live / "plots/metrics/val/top1.tsv").is_file() and (live / "plots/images/test_predictions.png").is_file()
    confusion = json.loads((live / "plots/sklearn/confusion.json").read_text())
    assert len(confusion) == 16 and {"actual", "predicted"} <= set(confusion[0])
    assert [row["test_images"] for row in details["per_identity"].values()] == [4, 4, 4, 4]
    assert "val_top1" in details["selected"]
    log = json.loads((run / "reports/runs/pretrain_f.json").read_text())
    assert log["status"] == "ok" and log["steps_run"] == 24 and 0 <= log["data_wait_share"] <= 1
    assert not (run / "dvc.yaml").exists()  # dvclive never writes a dvc.yaml of its own


KILL_AT_STEP_12 = """
import os, signal
from pipeline.train import live
log = live.LiveLog.log
def log_then_die(self, step, metrics):
    log(self, step, metrics)
    if step == 12:
        os.kill(os.getpid(), signal.SIGKILL)
live.LiveLog.log = log_then_die
from stages.pretrain_f import main
main()
"""


def test_resume_after_kill_9_ends_with_the_weights_of_an_uninterrupted_run(tmp_path: Path, tiny_faces: Path) -> None:
    clean = workdir(tmp_path / "clean", tiny_faces, steps=24, checkpoint_every=5, eval_every=10)
    stage(clean)
    killed = workdir(tmp_path / "killed", tiny_faces, steps=24, checkpoint_every=5, eval_every=10)
    checkpoint = killed / "models/checkpoints/pretrain_f/last.pt"
    # SIGKILL at a known step: after the curve row of step 12, two steps past the checkpoint of step 10, so the
    # resumed run must also drop the row its checkpoint does not cover.
    (killed / "driver.py").write_text(KILL_AT_STEP_12)
    process = subprocess.run([sys.executable, "driver.py"], cwd=killed, env=env(), capture_output=True, timeout=300)
    assert process.returncode == -signal.SIGKILL, process.stderr
    step = load_checkpoint(checkpoint)["step"]
    assert step == 10
    out = stage(killed).stdout
    assert f"resuming from step {step}" in out
    for final in ("models/checkpoints/pretrain_f/last.pt",):
        ours, theirs = weights(killed / final), weights(clean / final)
        assert all(torch.equal(ours[name], theirs[name]) for name in theirs)
    ours, theirs = load_f(killed / "models/f.pt").net.state_dict(), load_f(clean / "models/f.pt").net.state_dict()
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)
    assert (killed / "metrics/pretrain_f.json").read_text() == (clean / "metrics/pretrain_f.json").read_text()
    curve = "reports/pretrain_f/plots/metrics/train/loss.tsv"
    assert (killed / curve).read_text() == (clean / curve).read_text()  # no row twice, none missing


def test_a_checkpoint_of_other_params_is_not_resumed_but_a_matching_one_is(tmp_path: Path, tiny_faces: Path) -> None:
    run = workdir(tmp_path / "run", tiny_faces, steps=12)
    stage(run)
    first = (run / "metrics/pretrain_f.json").read_text()
    again = stage(run).stdout  # same params, code and data: the finished checkpoint is the result
    assert "resuming from step 12" in again and (run / "metrics/pretrain_f.json").read_text() == first
    workdir(run, tiny_faces, steps=12, lr=0.004)
    out = stage(run).stdout
    assert "other params (lr: 0.003 -> 0.004)" in out and "starting fresh from step 0" in out
    assert json.loads((run / "reports/runs/pretrain_f.json").read_text())["resumed_from_step"] == 0
    assert load_checkpoint(run / "models/checkpoints/pretrain_f/last.pt")["run"]["params"]["lr"] == 0.004


def test_a_corrupt_checkpoint_stops_the_stage_with_its_name_and_the_fix(tmp_path: Path, tiny_faces: Path) -> None:
    run = workdir(tmp_path / "run", tiny_faces, steps=6)
    checkpoint = run / "models/checkpoints/pretrain_f/last.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"PK\x03\x04 half a zip")
    result = stage(run, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "models/checkpoints/pretrain_f/last.pt is corrupt" in result.stderr and "delete it" in result.stderr
    assert checkpoint.read_bytes() == b"PK\x03\x04 half a zip"  # nothing the user had is touched


def test_too_few_training_faces_for_a_batch_is_a_clear_error(tmp_path: Path, tiny_faces: Path) -> None:
    result = stage(workdir(tmp_path / "run", tiny_faces, batch_size=500), check=False)
    assert result.returncode == 1 and "lower pretrain_f.batch_size" in result.stderr
    assert "Traceback" not in result.stderr


DDP_DRIVER = """
import json, os
from pipeline.core.params import load_params
from pipeline.train.pretrain_f import PretrainF
from pipeline.train.skeleton import train_model
result = train_model(PretrainF(load_params(), say=lambda line: None))
with open(f"metrics_rank{os.environ['RANK']}.json", "w") as handle:
    json.dump({"metrics": result.metrics, "details": result.details, "world": result.run["world_size"]}, handle)
"""


def test_ddp_world_size_2_on_cpu_trains_and_both_ranks_report_the_same_metrics(
    tmp_path: Path, tiny_faces: Path
) -> None:
    run = workdir(tmp_path / "run", tiny_faces, steps=12)
    (run / "driver.py").write_text(DDP_DRIVER)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "driver.py"]
    result = subprocess.run(command, cwd=run, env=env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    first, second = (json.loads((run / f"metrics_rank{r}.json").read_text()) for r in (0, 1))
    assert first == second and first["world"] == 2
    assert first["details"]["data"]["test_images"] == 16
    assert first["metrics"]["test_top1"] > first["metrics"]["chance_top1"]
    assert load_f(run / "models/f.pt").labels == [f"person_{i}" for i in range(4)]  # rank 0 wrote f


# Every key of the section: a different valid value, and whether it may change the trained weights.
CHANGES: dict[str, tuple[object, bool]] = {
    "seed": (1, True),
    "steps": (241, True),
    "batch_size": (16, True),
    "grad_clip": (1.0, True),
    "eval_every": (20, True),  # selection looks at other steps
    "input_size": (152, True),
    "width": (0.25, True),
    "batch_norm": (False, True),
    "dropout": (0.3, True),
    "optimizer": ("sgd", True),
    "lr": (0.001, True),
    "momentum": (0.8, True),
    "weight_decay": (0.01, True),
    "schedule": ("constant", True),
    "warmup_steps": (0, True),
    "label_smoothing": (0.0, True),
    "eval_flip": (True, True),
    **{f"augment.{k}": (0.2, True) for k in ("flip", "crop", "brightness", "contrast", "saturation", "grey")},
    "augment.rotate": (5.0, True),
    "avatars.weight": (0.5, True),
    "avatars.batch_size": (16, True),
    "avatars.randomize": (False, True),
    "avatars.domain_confusion": (0.1, True),
    "avatars.domain_hidden": (32, True),
    "runtime.device": ("cpu", True),  # CPU and CUDA kernels round differently
    "runtime.precision": ("bf16", True),
    "runtime.channels_last": (False, True),
    "runtime.compile": (True, True),
    "runtime.threads": (3, False),
    "log_every": (5, False),
    "checkpoint_every": (80, False),
    "model": ("elsewhere/f.pt", False),
    "metrics": ("elsewhere.json", False),
    "details": ("elsewhere-details.json", False),
    "run_log": ("elsewhere-run.json", False),
    "live_dir": ("elsewhere", False),
    "checkpoint_dir": ("elsewhere-ck", False),
}


def test_every_param_that_can_change_the_weights_changes_the_checkpoint_key() -> None:
    from pipeline.core.params import PretrainFParams
    from pipeline.train.pretrain_f import run_key

    section = PretrainFParams()
    nested = {"augment", "runtime", "avatars"}
    keys = {k for k in PretrainFParams.model_fields if k not in nested}
    keys |= {f"{n}.{k}" for n in nested for k in type(getattr(section, n)).model_fields}
    assert keys == set(CHANGES), "a new pretrain_f key needs a line in CHANGES"
    base = run_key(section, "data").value
    for key, (value, shapes) in CHANGES.items():
        raw = section.model_dump(mode="json")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        assert node[leaf] != value, key
        node[leaf] = value
        changed = run_key(PretrainFParams.model_validate(raw), "data").value
        assert (changed != base) == shapes, key
    assert run_key(section, "other data").value != base


def test_f_learns_the_avatars_parameters_beside_identity_and_the_domain_classifier_trains(
    tmp_path: Path, tiny_faces: Path
) -> None:
    from test_dtn import make_tiny_avatars

    make_tiny_avatars(tiny_faces / "avatars", side=40)
    task = {"weight": 1.0, "batch_size": 8, "domain_confusion": 0.5, "domain_hidden": 8}
    run = workdir(tmp_path / "run", tiny_faces, steps=12, avatars=task)
    out = stage(run).stdout
    assert "test top-1" in out
    curves = run / "reports/pretrain_f/plots/metrics/train"
    avatar = [float(line.split("\t")[1]) for line in (curves / "avatar_loss.tsv").read_text().splitlines()[1:]]
    assert len(avatar) == 4 and all(np.isfinite(avatar)) and (curves / "domain_loss.tsv").is_file()
    assert (run / "reports/pretrain_f/plots/images/train_avatars.png").is_file()
    checkpoint = load_checkpoint(run / "models/checkpoints/pretrain_f/last.pt")["modules"]
    assert {"model", "avatar_heads", "domain"} <= set(checkpoint)
    encoder = load_f(run / "models/f.pt")  # f.pt holds the VGG alone: lookalike, CAM and the DTN read it as before
    assert not any(k.startswith(("heads", "domain")) for k in encoder.net.state_dict())
    from conftest import make_tiny_faces

    make_tiny_faces(tmp_path / "bare" / "faces")
    without = workdir(tmp_path / "none", tmp_path / "bare", steps=2, avatars={"weight": 1.0})
    failed = stage(without, check=False)
    assert failed.returncode == 1 and "index.parquet not found" in failed.stderr and "Traceback" not in failed.stderr
