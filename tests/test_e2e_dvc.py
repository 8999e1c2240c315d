"""End to end: the real `dvc repro` / `dvc exp run` of the data stages in temporary clones, at small scale."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import cv2
import pandas as pd
import pytest
import yaml
from conftest import BIN, copy_pipeline, make_clone, run, shrink

from pipeline.core.checkpoint import load_checkpoint
from pipeline.models.dcgan import DCGAN_FORMAT

pytestmark = pytest.mark.slow
DVC = str(BIN / "dvc")


def load(root: Path, path: str) -> dict:
    return json.loads((root / path).read_text())


DATA_STAGES = ("crawl_faces", "crawl_avatars", "align", "pack")


def outputs(root: Path) -> dict[str, str]:
    """sha256 of every file the data stages leave: their data, metrics, details and align's sample sheet (not the run
    logs: they describe the run, not the result)."""
    files = [*(root / "data").rglob("*"), root / "reports/align_samples.png"]
    files += [root / f"metrics/{stage}.json" for stage in DATA_STAGES]
    files += [root / f"reports/details/{stage}.json" for stage in DATA_STAGES]
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(files) if p.is_file()
    }


def test_dvc_repro_data_stages(tiny_pipeline: Path, tmp_path: Path) -> None:
    """The data stages of the shared tiny pipeline (one `dvc repro` from an empty clone), then, on a copy: a no-op
    re-run, param changes as experiments, and a clean run with the changed values giving the same bytes."""
    root = tmp_path / "pipeline"
    env = copy_pipeline(tiny_pipeline, root)
    faces = load(root, "metrics/crawl_faces.json")
    assert faces["identities"] == 5 and faces["faces"]["kept"] >= 60
    assert load(root, "reports/details/crawl_faces.json")["candidates"] == 80
    frame = pd.read_parquet(root / "data/raw/faces.parquet")
    assert len(frame) == 80 and frame["synthetic"].all()
    align = load(root, "metrics/align.json")
    assert align["avatars"] == {"kept": 24, "rejected": 0} and 0.5 < align["truth"] <= 1
    assert load(root, "reports/details/align.json")["faces"]["input"] == faces["faces"]["kept"]
    pack = load(root, "metrics/pack.json")
    assert pack["identities"] == 3 and pack["avatars"]["kept"] == 24  # of 5 people, 1 + 1 held out whole
    assert pack["held_out_people"] == {"val": 1, "test": 1}
    index = pd.read_parquet(root / "data/shards/faces/index.parquet")
    assert len(index) == pack["faces"]["kept"] == align["faces"]["kept"]
    assert load(root, "metrics/crawl_avatars.json") == {"avatars": {"kept": 24, "rejected": 0}}
    frame = pd.read_parquet(root / "data/raw/avatars.parquet")
    assert len(frame) == 24 and (frame.status == "ok").all()
    assert frame["url"].str.startswith("sandbox:/avatar-builder-v3/preview/head?").all()
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert lock["stages"]["crawl_avatars"]["params"]["params.yaml"]["crawl.avatars"]["count"] == 24
    second = run([DVC, "repro"], root, env)
    assert "didn't change" in second.stdout or "up to date" in second.stdout
    # A sandbox key only the face crawl reads leaves the avatar crawl (and its descendants' reason) untouched.
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["sandbox"]["photos_per_identity"] += 1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = json.loads(run([DVC, "status", "--json"], root, env).stdout)
    assert "crawl_faces" in changed and "crawl_avatars" not in changed, changed
    params["sandbox"]["photos_per_identity"] -= 1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # The data stages share a few names, so their metrics are one narrow table (stages x faces/avatars).
    data_metrics = [f"metrics/{stage}.json" for stage in DATA_STAGES]
    header = run([DVC, "metrics", "show", *data_metrics], root, env).stdout.splitlines()[0].split()
    assert sorted(header[1:]) == [
        "avatars.kept", "avatars.rejected", "faces.kept", "faces.rejected", "faces.test", "faces.val",
        "held_out_people.test", "held_out_people.val", "identities", "truth",
    ]  # fmt: skip

    # A params change re-runs the stage, which resumes from its persisted outputs; metrics describe the dataset.
    # (The experiments stop at `pack`: the models downstream have their own tests.)
    run([DVC, "exp", "run", "-S", "crawl.avatars.count=30", "pack"], root, env)
    assert load(root, "reports/runs/crawl_avatars.json")["reused"] == 24
    assert load(root, "reports/runs/crawl_avatars.json")["fetched"] == 6
    diff = json.loads(run([DVC, "metrics", "diff", "--json"], root, env).stdout)
    changed = {(path, key) for path, metrics in diff.items() for key, change in metrics.items() if change.get("diff")}
    # the models trained on the avatars (train_dtn) legitimately change with them; the data stages must not move
    changed = {(path, key) for path, key in changed if path != "metrics/dtn.json" and not key.startswith("train_dtn.")}
    stages = ("crawl_avatars", "align", "pack")
    expected = {(f"metrics/{stage}.json", "avatars.kept") for stage in stages}
    if "metrics/summary.json" in diff:  # the report's flat copy of every stage's metrics
        expected |= {("metrics/summary.json", f"{stage}.avatars.kept") for stage in stages}
    assert changed == expected
    assert diff["metrics/crawl_avatars.json"]["avatars.kept"] == {"old": 24, "new": 30, "diff": 6}

    # A changed align param recomputes every crop; the result equals a clean run with that value.
    run([DVC, "exp", "run", "-S", "align.size=96", "pack"], root, env)
    crops = list((root / "data/aligned").rglob("*.png"))
    assert crops and {cv2.imread(str(p)).shape for p in crops} == {(96, 96, 3)}
    assert load(root, "reports/runs/align.json")["faces"]["reused"] == 0
    fresh = tmp_path / "fresh"
    fresh_env = make_clone(fresh)
    shrink(fresh, avatars=30, size=96)
    run([DVC, "repro", "pack"], fresh, fresh_env)
    assert outputs(root) == outputs(fresh)

    # A stage that fails (here: its params check) keeps the last good metrics and says which key to fix.
    before = (root / "metrics/pack.json").read_bytes()
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["pack"]["shard_size"] = 0
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    failed = subprocess.run([DVC, "repro", "pack"], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert failed.returncode != 0 and "pack.shard_size" in failed.stdout + failed.stderr
    assert (root / "metrics/pack.json").read_bytes() == before


def test_dvc_repro_pretrain_f_writes_f_metrics_and_plots(tiny_pipeline: Path, tmp_path: Path) -> None:
    root = tmp_path / "pipeline"
    env = copy_pipeline(tiny_pipeline, root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    dvc = DVC
    metrics = json.loads((root / "metrics/pretrain_f.json").read_text())
    details = json.loads((root / "reports/details/pretrain_f.json").read_text())
    assert metrics["chance_top1"] == round(1 / 3, 4) and details["data"]["test_images"] > 0  # 3 people f names
    assert (root / "models/f.pt").is_file()
    run(["git", "diff", "--exit-code", "dvc.yaml"], root, env)  # dvclive declared nothing of its own
    shown = json.loads(run([dvc, "metrics", "show", "--json"], root, env).stdout)
    assert shown[""]["data"]["metrics/pretrain_f.json"]["data"]["test_top1"] == metrics["test_top1"]
    plots = json.loads(run([dvc, "plots", "show", "--json"], root, env).stdout)
    # plots of stages downstream of pretrain_f (not run here) have no files yet; every existing one must show
    assert not [e for e in plots.get("errors", []) if (root / e["source"]).exists()], plots["errors"]
    assert all(item[0].get("content") or item[0].get("url") for item in plots["data"].values() if item)
    names = set(plots["data"])
    assert "reports/pretrain_f/plots/metrics/train/loss.tsv" in names
    assert "reports/pretrain_f/plots/sklearn/confusion.json" in names
    assert any(name.endswith("test_predictions.png") for name in names)
    assert "didn't change" in run([dvc, "repro", "pretrain_f"], root, env).stdout
    params["pretrain_f"]["steps"] += 10
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run([dvc, "repro", "pretrain_f"], root, env).stdout
    steps = params["pretrain_f"]["steps"]
    assert f"other params (steps: {steps - 10} -> {steps})" in out and "starting fresh" in out
    diff = json.loads(run([dvc, "metrics", "diff", "--json"], root, env).stdout)
    assert "metrics/pretrain_f.json" in diff
    status = run(["git", "status", "--porcelain"], root, env).stdout.splitlines()
    # (`dvc plots show` writes its page under dvc_plots/)
    assert sorted(line[3:] for line in status if not line[3:].startswith("dvc_plots/")) == [
        "dvc.lock",
        "metrics/pretrain_f.json",
        "params.yaml",
        "reports/details/pretrain_f.json",
    ]
    per_identity = load(root, "reports/details/pretrain_f.json")["per_identity"]
    assert len(per_identity) == 3 and all(0 <= row["accuracy"] <= 1 for row in per_identity.values())
    # A run that fails leaves the last good model and details where DVC would otherwise have deleted them first.
    kept = {path: (root / path).read_bytes() for path in ("models/f.pt", "reports/details/pretrain_f.json")}
    params["pretrain_f"]["steps"] = -1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    failed = subprocess.run(
        [DVC, "repro", "pretrain_f"], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert failed.returncode != 0 and "pretrain_f.steps" in failed.stdout + failed.stderr
    assert {path: (root / path).read_bytes() for path in kept} == kept


def test_dvc_exp_run_sets_the_learning_rate_train_dcgan_reads(tiny_pipeline: Path, tmp_path: Path) -> None:
    """On a copy of the tiny pipeline: `dvc exp run -S train.lr=...` re-runs train_dcgan (not pretrain_f), which
    trains with the new rate, and `dvc params diff` shows it."""
    root = tmp_path / "pipeline"
    env = copy_pipeline(tiny_pipeline, root)
    dvc = DVC
    assert json.loads((root / "metrics/dcgan.json").read_text())["fd_f_floor"] > 0
    out = run([dvc, "exp", "run", "-S", "train.lr=0.0001"], root, env).stdout
    assert "Running stage 'train_dcgan'" in out and "Running stage 'pretrain_f'" not in out
    diff = json.loads(run([dvc, "params", "diff", "--json"], root, env).stdout)
    change = diff["params.yaml"]["train.lr"]
    assert (change["old"], change["new"]) == (0.0002, 0.0001)
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert lock["stages"]["train_dcgan"]["params"]["params.yaml"]["train"]["lr"] == 0.0001
    model = load_checkpoint(root / "models/dcgan.pt", DCGAN_FORMAT)
    assert model["params"]["train"]["lr"] == 0.0001
    checkpoint = load_checkpoint(root / "models/checkpoints/train_dcgan/last.pt")
    assert {g["lr"] for opt in checkpoint["optimizers"].values() for g in opt["param_groups"]} == {0.0001}
