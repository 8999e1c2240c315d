"""Real photos end to end: every stage of the DAG, at smoke scale, on four people of the faces-dev photo set served by
the sandbox (params-real.yaml over .ci/smoke.yaml). Stages that need the sandbox's ground truth say so and go on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.core.profile import apply_profile

REPO = Path(__file__).resolve().parents[1]
PEOPLE = ["ben_afflek", "elton_john", "madonna", "tiger_woods"]


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def dag_order() -> list[str]:
    stages = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    return [s for s in stages if s != "report"]  # the report reads the stages through DVC: CI's smoke run covers it


@pytest.mark.slow
def test_every_stage_trains_and_reports_on_real_photos(tmp_path: Path, faces_dev: Path) -> None:
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    apply_profile(params, REPO / "params-real.yaml")
    apply_profile(params, REPO / ".ci/smoke.yaml")
    smoke = yaml.safe_load(params.read_text())
    smoke["sandbox"]["photos"] = str(faces_dev)
    smoke["crawl"]["faces"].update(identities=PEOPLE, per_identity=60)
    smoke["pack"]["min_faces_per_identity"] = 5
    params.write_text(yaml.safe_dump(smoke, sort_keys=False))
    said = {}
    for name in dag_order():
        result = run([sys.executable, "-m", f"stages.{name}"], tmp_path)
        assert result.returncode == 0, f"{name}:\n{result.stdout}\n{result.stderr}"
        said[name] = result.stdout

    f = json.loads((tmp_path / "metrics/pretrain_f.json").read_text())
    assert f["chance_top1"] == 0.25  # every one of the four people is a class: none is held out
    cam = json.loads((tmp_path / "metrics/cam.json").read_text())
    assert 0 <= cam["localised"] <= 1 and 0 <= cam["floor_localised"] <= 1  # against the Haar boxes of real photos
    dcgan = json.loads((tmp_path / "metrics/dcgan.json").read_text())
    assert np.isfinite(dcgan["fd_f"]) and dcgan["fd_f_floor"] >= 0
    dtn = json.loads((tmp_path / "metrics/dtn.json").read_text())
    assert dtn["traits_compared"] == 0 and "no held-out people with known traits" in said["train_dtn"]
    avatars = json.loads((tmp_path / "metrics/avatar_params.json").read_text())
    assert avatars["traits"] == {} and "no trait verdicts" in said["train_avatar_params"]
    grid = cv2.imread(str(tmp_path / "reports/train_avatar_params/plots/images/people_avatars.png"))
    assert grid is not None and grid.std() > 10  # photos and drawn avatars, not a blank sheet

    aligned = pd.read_parquet(tmp_path / "data/aligned/faces.parquet")
    photo = tmp_path / "data/raw/faces" / aligned.loc[aligned["status"] == "ok", "raw_path"].iloc[0]  # align kept it
    out = tmp_path / "emoji.png"
    result = run([sys.executable, "-m", "pipeline.cli", "emojify", str(photo), "-o", str(out)], tmp_path)
    assert result.returncode == 0, result.stderr
    avatar = cv2.imread(str(out))  # the engine's render of the predicted parameters (tests/test_avatar_params.py)
    assert avatar.shape[0] == avatar.shape[1] >= 64 and avatar.std() > 10
