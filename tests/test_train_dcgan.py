"""The train_dcgan stage on tiny shards: outputs, curves, grids and GIF, resume, refusals; `dvc exp run -S train.lr`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from pipeline.core.checkpoint import load_checkpoint
from pipeline.models.dcgan import DCGAN_FORMAT
from pipeline.models.face_encoder import save_f
from pipeline.models.vgg import VGG
from pipeline.train.train_dcgan import discriminator_loss, generator_loss, r1_penalty, update_average

REPO = Path(__file__).resolve().parents[1]
TRAIN = {
    "steps": 6,
    "batch_size": 8,
    "log_every": 2,
    "eval_every": 2,
    "checkpoint_every": 3,
    "runtime": {"threads": 1},
}
DCGAN = {"nz": 8, "ngf": 4, "ndf": 4, "grid_samples": 8}
DIFFAUGMENT = ["translation", "cutout"]  # the default


def tiny_f(path: Path) -> Path:
    """An untrained f of the tiny shards' 4 identities: the evaluation's code path needs an f, not a good one."""
    torch.manual_seed(0)
    arch = {"num_classes": 4, "input_size": 64, "width": 0.125, "batch_norm": True, "dropout": 0.5}
    save_f(path, VGG(**arch).state_dict(), arch, [f"person_{i}" for i in range(4)], {})
    return path


def workdir(root: Path, shards: Path, train: dict | None = None, dcgan: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    params = {
        "pack": {"out_dir": str(shards)},
        "pretrain_f": {"model": str(tiny_f(root / "f.pt"))},
        "train": {**TRAIN, **(train or {})},
        "dcgan": {**DCGAN, **(dcgan or {})},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def stage(cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "stages.train_dcgan"],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_stage_trains_writes_curves_grids_gif_and_fd_beside_its_floor(tmp_path: Path, tiny_faces: Path) -> None:
    root = workdir(tmp_path / "run", tiny_faces)
    out = stage(root).stdout
    assert "no checkpoint" in out and "fd_f" in out
    metrics = json.loads((root / "metrics/dcgan.json").read_text())
    details = json.loads((root / "reports/details/dcgan.json").read_text())
    # 4 identities x 32 photos, mirrored: 256 views, two halves of 128; as many generated samples
    assert details["real_faces"] == 128 and details["samples"] == 256
    assert metrics["fd_f"] > 0 and metrics["fd_f_floor"] > 0
    assert metrics["fd_f_ratio"] == pytest.approx(metrics["fd_f"] / metrics["fd_f_floor"], rel=1e-2)
    assert details["diversity_gen"] > 0 and details["diversity_real"] > 0 and "fid" not in metrics
    live = root / "reports/train_dcgan"
    for name in ("loss_D", "loss_G", "D_x", "D_G_z_before_D_step", "D_G_z_at_G_step"):
        rows = (live / f"plots/metrics/train/{name}.tsv").read_text().splitlines()[1:]
        assert [int(row.split("\t")[0]) for row in rows] == [2, 4, 6], name
    frames = sorted(p.name for p in (live / "plots/images/samples").iterdir())
    assert frames == ["step_000000.png", "step_000002.png", "step_000004.png", "step_000006.png"]
    grid = Image.open(live / "plots/images/samples/step_000006.png")
    assert grid.size == (8 * 66 + 2, 66 + 2)  # 8 samples of 64 px, 8 per row, 2 px padding
    gif = Image.open(live / "plots/images/training.gif")
    assert gif.format == "GIF" and gif.n_frames == 4
    assert Image.open(live / "plots/images/samples_final.png").size == (8 * 66 + 2, 8 * 66 + 2)
    model = load_checkpoint(root / "models/dcgan.pt", DCGAN_FORMAT)
    assert model["arch"] == {"nz": 8, "ngf": 4, "ndf": 4, "spectral_norm": False}
    assert model["params"]["train"]["lr"] == 0.0002 and model["params"]["dcgan"]["diffaugment"] == DIFFAUGMENT
    # the memorisation guard: generated faces' nearest training face against the test faces'
    assert 0 <= metrics["copy_share"] <= 1 and metrics["copy_share_chance"] == 0.05
    guard = details["memorisation"]
    assert guard["nearest_train_generated_median"] > 0 and guard["nearest_train_test_median"] > 0
    assert model["metrics"] == metrics
    # A second run resumes from the final checkpoint: nothing retrained, the same numbers
    again = stage(root).stdout
    assert "resuming from step 6" in again
    assert json.loads((root / "metrics/dcgan.json").read_text()) == metrics
    # Another learning rate is another run: it starts fresh and Adam gets the new rate
    workdir(root, tiny_faces, train={"lr": 0.0001})
    fresh = stage(root).stdout
    assert "other params (train.lr: 0.0002 -> 0.0001)" in fresh and "starting fresh" in fresh
    checkpoint = load_checkpoint(root / "models/checkpoints/train_dcgan/last.pt")
    assert {g["lr"] for opt in checkpoint["optimizers"].values() for g in opt["param_groups"]} == {0.0001}


def test_evaluation_settings_do_not_retrain(tmp_path: Path, tiny_faces: Path) -> None:
    root = workdir(tmp_path / "run", tiny_faces)
    stage(root)
    workdir(root, tiny_faces, dcgan={"real_splits": ["test"], "eval_flip": False})
    out = stage(root).stdout
    assert "resuming from step 6" in out
    details = json.loads((root / "reports/details/dcgan.json").read_text())
    assert details["real_faces"] == 16 and details["samples"] == 16  # 4 x 4 test photos, halves of 8


def test_refusals_are_messages(tmp_path: Path, tiny_faces: Path) -> None:
    root = workdir(tmp_path / "run", tiny_faces, dcgan={"inception": str(tmp_path / "nowhere.pt")})
    failed = stage(root, check=False)
    assert failed.returncode == 1 and "dcgan.inception" in failed.stderr and "Traceback" not in failed.stderr
    root = workdir(tmp_path / "big", tiny_faces, train={"batch_size": 1000})
    failed = stage(root, check=False)
    assert failed.returncode == 1 and "lower train.batch_size" in failed.stderr
    (root / "f.pt").unlink()
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["batch_size"] = 8
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    failed = stage(root, check=False)
    assert failed.returncode == 1 and "dvc repro pretrain_f" in failed.stderr


def test_smoothed_real_label_stops_d_at_its_target_and_1_never_does() -> None:
    fake = torch.zeros(1)
    for real_label, at_target in ((0.9, 0.9), (1.0, 0.999)):
        logit = torch.logit(torch.tensor([at_target])).requires_grad_()
        discriminator_loss(logit, fake, real_label).backward()
        if real_label < 1:
            assert abs(float(logit.grad)) < 1e-6  # D gains nothing from being surer than 0.9
        else:
            assert float(logit.grad) < 0  # the paper's target keeps pushing real logits up
    surer = torch.logit(torch.tensor([0.99])).requires_grad_()
    discriminator_loss(surer, fake, 0.9).backward()
    assert float(surer.grad) > 0  # and past the target it pulls them back


def test_hinge_losses_stop_at_the_margin() -> None:
    real = torch.tensor([2.0, 0.5], requires_grad=True)
    fake = torch.tensor([-2.0, 0.0], requires_grad=True)
    loss = discriminator_loss(real, fake, 0.9, "hinge")
    assert float(loss.detach()) == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    loss.backward()
    assert real.grad.tolist() == [0.0, -0.5] and fake.grad.tolist() == [0.0, 0.5]  # past the margin: no push
    fooled = torch.tensor([1.0, -3.0], requires_grad=True)
    generator_loss(fooled, "hinge").backward()
    assert fooled.grad.tolist() == [-0.5, -0.5]  # G always pushes its faces' scores up
    assert float(generator_loss(torch.zeros(2))) == pytest.approx(0.6931, abs=1e-4)  # bce: -log 0.5


def test_r1_is_half_the_squared_slope_at_the_real_faces_and_d_learns_to_flatten_it() -> None:
    weight = torch.tensor([[1.0, -2.0], [0.5, 0.0]], requires_grad=True)  # D(x) = <weight, x>: slope = weight
    seen = torch.rand(3, 1, 2, 2).requires_grad_(True)
    penalty = r1_penalty((seen * weight).flatten(1).sum(1), seen, 4.0)
    assert float(penalty.detach()) == pytest.approx(4.0 / 2 * (1 + 4 + 0.25))
    penalty.backward()
    assert torch.allclose(weight.grad, 4.0 * weight.detach())  # descending it shrinks D's slope


def test_stabilisers_are_params_that_change_the_run(tmp_path: Path, tiny_faces: Path) -> None:
    root = workdir(tmp_path / "run", tiny_faces, train={"steps": 2}, dcgan={"diffaugment": []})
    stage(root)
    stabilised = {"spectral_norm": True, "loss": "hinge", "lr_d": 0.0004, "r1": 1.0}
    workdir(root, tiny_faces, train={"steps": 2}, dcgan=stabilised)
    out = stage(root).stdout
    assert "starting fresh" in out and "dcgan.diffaugment" in out
    r1_curve = (root / "reports/train_dcgan/plots/metrics/train/r1.tsv").read_text().split()
    assert r1_curve[:2] == ["step", "r1"] and all(0 <= float(v) < float("inf") for v in r1_curve[2:])
    model = load_checkpoint(root / "models/dcgan.pt", DCGAN_FORMAT)
    assert model["arch"]["spectral_norm"] is True
    checkpoint = load_checkpoint(root / "models/checkpoints/train_dcgan/last.pt")
    assert checkpoint["optimizers"]["D"]["param_groups"][0]["lr"] == 0.0004
    assert checkpoint["optimizers"]["G"]["param_groups"][0]["lr"] == 0.0002


def test_the_weight_average_follows_g_and_is_what_the_stage_samples_and_saves(tmp_path: Path, tiny_faces: Path) -> None:
    average, current = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    before = average.weight.detach().clone()
    update_average(average, current, 0.9)
    assert torch.allclose(average.weight, 0.9 * before + 0.1 * current.weight)
    root = workdir(tmp_path / "run", tiny_faces, train={"steps": 2}, dcgan={"ema": 0.5, "diffaugment": []})
    stage(root)
    model = load_checkpoint(root / "models/dcgan.pt", DCGAN_FORMAT)
    checkpoint = load_checkpoint(root / "models/checkpoints/train_dcgan/last.pt")
    saved = model["generator"]
    averaged, last = checkpoint["modules"]["G_ema"], checkpoint["modules"]["G"]
    assert all(torch.equal(saved[k], averaged[k]) for k in saved)  # dcgan.pt holds the average ...
    assert any(not torch.equal(saved[k], last[k]) for k in saved)  # ... not G's last weights
