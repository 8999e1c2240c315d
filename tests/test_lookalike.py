"""`i2c lookalike`: a real faces-dev photo finds its identity after a small training; bad input gets a clear message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import huge_png

from pipeline.core.params import AlignParams
from pipeline.models.face_encoder import save_f
from pipeline.models.vgg import VGG

REPO = Path(__file__).resolve().parents[1]


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def i2c(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "pipeline.cli", *args], cwd)


@pytest.fixture
def untrained_f(tmp_path: Path) -> Path:
    path = tmp_path / "f.pt"
    net = VGG(num_classes=3, input_size=64, width=0.0625)
    arch = {"num_classes": 3, "input_size": 64, "width": 0.0625, "batch_norm": True, "dropout": 0.5}
    save_f(path, net.state_dict(), arch, ["a", "b", "c"], {"align": AlignParams().model_dump(mode="json")})
    return path


@pytest.mark.parametrize(
    ("photo", "expected"),
    [
        ("text", "is not an image that can be decoded"),
        ("blank", "shows no face the detector can find"),
        ("missing_photo", "not found; pass the path of a photo"),
        ("missing_model", "not found; train f first with `dvc repro pretrain_f`"),
        ("corrupt_model", "is corrupt or not a checkpoint"),
        ("folder", "is a folder; pass the path of a photo"),
        ("huge_png", "12000x12000 pixels, more than the 40,000,000 the crawls accept (too_many_pixels)"),
    ],
)
def test_bad_input_gets_a_clear_message_and_exit_1(
    tmp_path: Path, untrained_f: Path, photo: str, expected: str
) -> None:
    path, model = tmp_path / "photo.png", untrained_f
    if photo == "text":
        path.write_text("not a photo at all")
    elif photo == "folder":
        path.mkdir()
    elif photo == "huge_png":
        huge_png(path)
    elif photo != "missing_photo":
        gradient = np.tile(np.linspace(0, 255, 200, dtype=np.uint8)[None, :, None], (160, 1, 3))
        cv2.imwrite(str(path), gradient)
    if photo == "missing_model":
        model = tmp_path / "models" / "f.pt"
    elif photo == "corrupt_model":
        model.write_bytes(model.read_bytes()[:100])
    result = i2c("lookalike", str(path), "--model", str(model), cwd=tmp_path)
    assert result.returncode == 1 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "weights_only=False" not in result.stderr  # never the unsafe load


@pytest.mark.slow
def test_a_faces_dev_photo_finds_its_identity_after_a_small_training(tmp_path: Path, faces_dev: Path) -> None:
    params = {
        "sandbox": {"photos": str(faces_dev)},
        "crawl": {"faces": {"identities": [], "per_identity": 20}, "avatars": {"count": 4}},
        "pack": {"people_val_fraction": 0.0, "people_test_fraction": 0.0},  # every person is one f can name
        "pretrain_f": {
            "avatars": {"weight": 0.0},
            "input_size": 64,
            "width": 0.125,
            "steps": 200,
            "eval_every": 100,
            "checkpoint_every": 200,
            "runtime": {"threads": 1},
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for name in ("crawl_faces", "crawl_avatars", "align", "pack", "pretrain_f"):
        result = run([sys.executable, "-m", f"stages.{name}"], tmp_path)
        assert result.returncode == 0, f"{name}:\n{result.stdout}\n{result.stderr}"
    metrics = json.loads((tmp_path / "metrics/pretrain_f.json").read_text())
    assert metrics["chance_top1"] == round(1 / 15, 4)  # 15 identities
    index = pd.read_parquet(tmp_path / "data/shards/photos/index.parquet")
    train = index[index["split"] == "train"].drop_duplicates("identity").sort_values("identity").iloc[::5]
    for row in train.itertuples():  # three people, one of their photos each
        photo = tmp_path / "data/raw/faces" / row.source
        result = i2c("lookalike", str(photo), "--top", "5", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        ranked = [line.split()[1] for line in result.stdout.splitlines()]
        assert len(ranked) == 5 and row.identity in ranked, (row.identity, result.stdout)
    show = tmp_path / "show.png"
    result = i2c("lookalike", str(photo), "--show", str(show), cwd=tmp_path)
    assert result.returncode == 0 and "most similar training photo" in result.stdout, result.stderr
    sheet = cv2.imread(str(show))
    assert sheet.shape == (152 + 8, 3 * 152 + 16, 3)
