"""The train_cam stage on tiny photo shards (a coloured disc that names the identity, placed anywhere on noise),
and `i2c cam` on a photo and on a video written here with OpenCV; bad input gets a clear message."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import huge_png

from pipeline.core.manifest import write_manifest
from pipeline.dataset.shards import BOX_COLUMNS, write_dataset
from pipeline.dataset.splits import SPLITS
from pipeline.evaluate.cam_boxes import Box, iou
from pipeline.evaluate.localise import SIZE_BINS
from pipeline.models.cam import load_cam
from pipeline.models.face_encoder import save_f
from pipeline.models.vgg import VGG
from pipeline.train import train_cam

REPO = Path(__file__).resolve().parents[1]
SIDE = 64
TINY = {
    "input_size": 64,
    "width": 0.125,
    "batch_size": 8,
    "steps": 60,
    "eval_every": 20,
    "checkpoint_every": 20,
    "log_every": 5,
    "lr": 0.003,
    "warmup_steps": 3,
    "init": "scratch",
    "freeze_blocks": 0,
    "overlays": 4,
    "augment": {"flip": 0.0, "crop": 0.0},
    "runtime": {"threads": 1},
}


def disc_photo(rng: np.random.Generator, label: int) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Noise with a disc of the identity's colour at a random place; the box is the disc's."""
    colour = np.array([(label * 97) % 256, (label * 57 + 80) % 256, (label * 151 + 40) % 256])
    radius = rng.uniform(7, 11)
    cx, cy = rng.uniform(radius, SIDE - radius, 2)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] + 0.5
    image = rng.integers(0, 90, (SIDE, SIDE, 3))
    image[(xx - cx) ** 2 + (yy - cy) ** 2 < radius**2] = colour
    return image.astype(np.uint8), (cx - radius, cy - radius, 2 * radius, 2 * radius)


def make_tiny_photos(root: Path, classes: int = 4, per_class: tuple[int, int, int] = (24, 4, 6)) -> Path:
    """`<root>/photos`: packed photo shards with the box columns pack writes. Returns `root`."""
    rng = np.random.default_rng(0)
    rows, images = [], []
    for label in range(classes):
        for split, count in zip(("train", "val", "test"), per_class, strict=True):
            for _ in range(count):
                image, box = disc_photo(rng, label)
                images.append(image)
                named = dict(zip(BOX_COLUMNS, box, strict=True))
                rows.append({"split": split, "label": label, "identity": f"person_{label}", **named})
    index = write_dataset(pd.DataFrame(rows), lambda i: (images[i], {}), root / "photos", shard_size=16)
    write_manifest(index.to_dict("records"), root / "photos" / "index.parquet", list(index.columns), {})
    return root


def workdir(root: Path, shards: Path, **section: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    params = {"pack": {"out_dir": str(shards)}, "cam": {**TINY, **section}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def stage(cwd: Path) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "stages.train_cam"], cwd)


def i2c(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "pipeline.cli", *args], cwd)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder after the stage trained VGG-GAP on the tiny photos."""
    root = tmp_path_factory.mktemp("cam")
    run_dir = workdir(root / "run", make_tiny_photos(root / "shards"))
    result = stage(run_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    return run_dir


def test_box_columns_match_pack_s() -> None:
    assert list(train_cam.BOX_COLUMNS) == BOX_COLUMNS


def test_stage_learns_identities_and_scores_boxes_against_the_index_s(trained: Path) -> None:
    metrics = json.loads((trained / "metrics/cam.json").read_text())
    details = json.loads((trained / "reports/details/cam.json").read_text())
    assert details["data"] == {"identities": 4, "train_images": 96, "test_images": 24}
    assert metrics["chance_top1"] == 0.25 and metrics["test_top1"] >= 0.75
    # the floor is the mean training box scored against every test box of the index, recomputed here
    index = pd.read_parquet(trained.parent / "shards/photos/index.parquet")
    boxes = {
        split: [Box(*row) for row in index.loc[index["split"] == split, BOX_COLUMNS].to_numpy()] for split in SPLITS
    }
    prior = Box(*np.mean(boxes["train"], axis=0))
    expected = [iou(prior, truth) for truth in boxes["test"]]
    assert metrics["floor_mean_iou"] == round(float(np.mean(expected)), 4)
    assert metrics["floor_localised"] == round(float(np.mean(np.array(expected) >= 0.5)), 4)
    assert 0 <= metrics["localised"] <= 1 and 0 < metrics["mean_iou"] < 1
    model = load_cam(trained / "models/cam.pt")
    assert model.labels == [f"person_{i}" for i in range(4)] and model.arch["head"] == "gap"
    assert model.info["photo_size"] == SIDE and model.info["params"]["threshold"] == train_cam.CamParams().threshold
    live = trained / "reports/train_cam/plots"
    assert (live / "metrics/train/loss.tsv").is_file() and (live / "metrics/val/localised.tsv").is_file()
    sheet = cv2.imread(str(live / "images/test_overlays.png"))
    assert sheet is not None and sheet.shape[1] > 4 * SIDE
    assert sum(details["iou_histogram"].values()) == 24 and details["map"] == "class activation map"
    # by face size: every test photo in one bin, each bin beside its own mean-box floor
    sizes = details["by_size"]
    assert set(sizes) == set(SIZE_BINS) and sum(row["photos"] for row in sizes.values()) == 24
    for name, row in sizes.items():
        assert (row["localised"] is None) == (row["photos"] == 0) == (row["floor"] is None), name
    small = sizes[next(iter(SIZE_BINS))]
    assert metrics["localised_small"] == small["localised"] and metrics["floor_localised_small"] == small["floor"]
    assert details["map_side"] == model.arch["input_size"] // 16 and model.arch["map_stride"] == 16


def test_a_rerun_resumes_nothing_to_do_and_gives_the_same_model(trained: Path) -> None:
    before = load_cam(trained / "models/cam.pt").net.state_dict()
    result = stage(trained)
    assert result.returncode == 0 and "resuming from step 60" in result.stdout, result.stdout + result.stderr
    after = load_cam(trained / "models/cam.pt").net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_calibrated_pair_is_the_val_sweep_s_best_with_mean_iou_breaking_ties() -> None:
    sweep = {
        (0.3, 0.5): {"localised": 0.6, "mean_iou": 0.50},
        (0.5, 0.6): {"localised": 0.7, "mean_iou": 0.52},
        (0.5, 0.8): {"localised": 0.7, "mean_iou": 0.55},
        (0.9, 1.0): {"localised": 0.1, "mean_iou": 0.90},
    }
    assert train_cam.calibrated_pair(sweep) == (0.5, 0.8)


def test_calibrate_boxes_test_with_the_val_sweep_s_best_pair_and_saves_it(tmp_path: Path) -> None:
    """`cam.calibrate: true`: the pair is chosen on val alone; the test numbers, the details and cam.pt (which
    `i2c cam` reads) all use it, so new data does not inherit a pair chosen on other photos."""
    run_dir = workdir(tmp_path / "cal", make_tiny_photos(tmp_path / "shards"), steps=20, threshold=0.9, box_scale=2.0)
    result = stage(run_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    details = json.loads((run_dir / "reports/details/cam.json").read_text())
    assert details["calibrated"] is False and (details["threshold"], details["box_scale"]) == (0.9, 2.0)
    plain = json.loads((run_dir / "metrics/cam.json").read_text())
    params = yaml.safe_load((run_dir / "params.yaml").read_text())
    params["cam"]["calibrate"] = True
    (run_dir / "params.yaml").write_text(yaml.safe_dump(params))
    result = stage(run_dir)  # the same weights (the seed and data are the same), boxed with the val sweep's best
    assert result.returncode == 0, result.stdout + result.stderr
    details = json.loads((run_dir / "reports/details/cam.json").read_text())
    sweep = {tuple(map(float, re.findall(r"[\d.]+", k))): v for k, v in details["val_sweep"].items()}
    assert details["calibrated"] is True
    assert (details["threshold"], details["box_scale"]) == train_cam.calibrated_pair(sweep)
    info = load_cam(run_dir / "models/cam.pt").info["params"]
    assert (info["threshold"], info["box_scale"]) == (details["threshold"], details["box_scale"])
    calibrated = json.loads((run_dir / "metrics/cam.json").read_text())
    assert calibrated["test_top1"] == plain["test_top1"]  # the pair shapes the boxes only
    assert calibrated["localised"] >= 0 and calibrated["floor_localised"] == plain["floor_localised"]


def test_fc_head_is_boxed_by_its_occlusion_map(tmp_path: Path) -> None:
    run_dir = workdir(
        tmp_path / "fc",
        make_tiny_photos(tmp_path / "shards"),
        head="fc",
        steps=20,
        occlusion_patch=16,
        occlusion_stride=8,
    )
    result = stage(run_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "train_cam (fc head)" in result.stdout
    details = json.loads((run_dir / "reports/details/cam.json").read_text())
    assert details["map"].startswith("occlusion") and sum(details["iou_histogram"].values()) == 24
    assert load_cam(run_dir / "models/cam.pt").arch["head"] == "fc"


def test_init_from_f_loads_its_conv_stack_and_refuses_another_width(tmp_path: Path) -> None:
    f = VGG(num_classes=3, input_size=64, width=0.125)
    arch = {"num_classes": 3, "input_size": 64, "width": 0.125, "batch_norm": True, "dropout": 0.5}
    save_f(tmp_path / "f.pt", f.state_dict(), arch, ["a", "b", "c"], {})
    shards = make_tiny_photos(tmp_path / "shards")
    section = train_cam.CamParams.model_validate({**TINY, "init": "f"})
    state, f_id = train_cam.f_conv_stack(section, tmp_path / "f.pt")
    assert torch.equal(state["0.0.weight"], f.features[0][0].weight) and len(f_id) == 16
    wide = workdir(tmp_path / "wide", shards, init="f", width=0.25, steps=2)
    params = yaml.safe_load((wide / "params.yaml").read_text())
    params["pretrain_f"] = {"model": str(tmp_path / "f.pt")}
    (wide / "params.yaml").write_text(yaml.safe_dump(params))
    result = stage(wide)
    assert result.returncode == 1 and "cam.width=0.25 but f" in result.stderr and "cam.init=scratch" in result.stderr
    missing = stage(workdir(tmp_path / "missing", shards, init="f", steps=2))
    assert missing.returncode == 1 and "run `dvc repro pretrain_f` first" in missing.stderr
    assert "Traceback" not in result.stderr + missing.stderr


@pytest.mark.parametrize("cached_views", [2, 0])
def test_frozen_blocks_stay_as_f_made_them_and_the_rest_learns(tmp_path: Path, cached_views: int) -> None:
    torch.manual_seed(0)  # the same made-up f every run (an unseeded one once left test top-1 at exactly chance)
    f = VGG(num_classes=3, input_size=64, width=0.125)
    arch = {"num_classes": 3, "input_size": 64, "width": 0.125, "batch_norm": True, "dropout": 0.5}
    save_f(tmp_path / "f.pt", f.state_dict(), arch, ["a", "b", "c"], {})
    run_dir = workdir(
        tmp_path / "run", make_tiny_photos(tmp_path / "shards"), init="f", freeze_blocks=4, cached_views=cached_views
    )
    params = yaml.safe_load((run_dir / "params.yaml").read_text())
    params["pretrain_f"] = {"model": str(tmp_path / "f.pt")}
    (run_dir / "params.yaml").write_text(yaml.safe_dump(params))
    result = stage(run_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("cached the frozen blocks for 96 photos x 2 views" in result.stdout) == (cached_views == 2)
    trained_state = load_cam(run_dir / "models/cam.pt").net.state_dict()
    f_state = {k.removeprefix("features."): v for k, v in f.state_dict().items() if k.startswith("features.")}
    # conv1..conv4 with their BatchNorm statistics are f's; conv5 trained on
    assert all(torch.equal(trained_state[f"features.{k}"], v) for k, v in f_state.items() if int(k.split(".")[0]) < 4)
    assert not torch.equal(trained_state["features.4.0.weight"], f_state["4.0.weight"])
    assert json.loads((run_dir / "metrics/cam.json").read_text())["test_top1"] > 0.25  # chance: 4 identities
    details = json.loads((run_dir / "reports/details/cam.json").read_text())
    assert set(details["val_sweep"]) == {f"threshold {t:.1f}, box scale {s:.1f}" for t, s in train_cam.SWEEP}
    # each pair also by face size, so that a default is chosen for the small faces on val too
    sizes = [f"localised_{name.split()[0]}" for name in SIZE_BINS]
    assert all(set(sizes) <= set(row) for row in details["val_sweep"].values())
    assert all(row[key] is None or 0 <= row[key] <= 1 for row in details["val_sweep"].values() for key in sizes)


def test_frozen_blocks_need_f() -> None:
    with pytest.raises(ValueError, match="freeze_blocks 4 keeps f's blocks; set init: f or freeze_blocks: 0"):
        train_cam.CamParams.model_validate({**TINY, "freeze_blocks": 4})


def test_i2c_cam_on_a_photo_writes_the_overlay_and_names_the_identity(trained: Path, tmp_path: Path) -> None:
    image, _ = disc_photo(np.random.default_rng(7), 1)
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), cv2.cvtColor(np.kron(image, np.ones((2, 2, 1), np.uint8)), cv2.COLOR_RGB2BGR))  # 128 px
    out = tmp_path / "out" / "overlay.png"
    model = str(trained / "models/cam.pt")
    result = i2c("cam", str(photo), "-o", str(out), "--model", model, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("person_1") and "box x=" in result.stdout
    overlay = cv2.imread(str(out))
    assert overlay is not None and overlay.shape == (128, 128, 3)


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_i2c_cam_on_a_video_writes_every_frame(trained: Path, tmp_path: Path, suffix: str) -> None:
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (96, 80))
    rng = np.random.default_rng(3)
    for _ in range(7):
        image, _ = disc_photo(rng, 1)
        writer.write(cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), (96, 80)))
    writer.release()
    out = tmp_path / f"clip{suffix}"
    result = i2c("cam", str(video), "-o", str(out), "--model", str(trained / "models/cam.pt"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "7 frames" in result.stdout and "frame" in result.stderr  # tqdm's progress bar goes to stderr
    if suffix == ".gif":
        from PIL import Image

        with Image.open(out) as gif:
            assert gif.n_frames == 7 and gif.size == (96, 80)
    else:
        capture = cv2.VideoCapture(str(out))
        frames = 0
        while capture.read()[0]:
            frames += 1
        assert frames == 7 and capture.get(cv2.CAP_PROP_FRAME_WIDTH) == 96
        capture.release()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("text", "is neither a photo nor a video"),
        ("missing_input", "not found; pass the path of a photo or a video"),
        ("missing_model", "not found; train the CAM model first with `dvc repro train_cam`"),
        ("corrupt_model", "is corrupt or not a checkpoint"),
        ("photo_to_gif", "the overlay of a photo is written as .png"),
        ("truncated_jpeg", "is a damaged image (truncated"),  # a photo, never a one-frame video
        ("folder", "is a folder; pass the path of a photo or a video"),
        ("huge_png", "12000x12000 pixels, more than the 40,000,000 the crawls accept (too_many_pixels)"),
        ("out_folder", "is a folder; pass the path of the file to write"),
        ("dead_video", "is a video none of whose 20 frames can be read"),
    ],
)
def test_bad_input_gets_a_clear_message_and_exit_1(trained: Path, tmp_path: Path, case: str, expected: str) -> None:
    source, model, out = tmp_path / "input.png", tmp_path / "cam.pt", tmp_path / "out.png"
    model.write_bytes((trained / "models/cam.pt").read_bytes())
    if case == "text":
        source.write_text("neither a photo nor a video")
    elif case == "truncated_jpeg":
        source = tmp_path / "input.jpg"
        cv2.imwrite(str(source), disc_photo(np.random.default_rng(0), 0)[0])
        source.write_bytes(source.read_bytes()[:-200])
    elif case == "folder":
        source = tmp_path / "photos"
        source.mkdir()
    elif case == "huge_png":
        huge_png(source)
    elif case == "dead_video":
        source, out = tmp_path / "clip.avi", tmp_path / "clip.gif"
        data = bytearray(video(source, 20).read_bytes())
        movi = data.find(b"movi")
        data[movi + 4 : len(data) - 2000] = bytes(len(data) - 2000 - movi - 4)  # every frame's bytes zeroed
        source.write_bytes(bytes(data))
    elif case != "missing_input":
        cv2.imwrite(str(source), disc_photo(np.random.default_rng(0), 0)[0])
    if case == "out_folder":
        out = tmp_path / "already_a_folder"
        out.mkdir()
    if case == "missing_model":
        model = tmp_path / "models" / "cam.pt"
    elif case == "corrupt_model":
        model.write_bytes(model.read_bytes()[:100])
    elif case == "photo_to_gif":
        out = tmp_path / "out.gif"
    result = i2c("cam", str(source), "-o", str(out), "--model", str(model), cwd=tmp_path)
    assert result.returncode == 1 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and (case == "out_folder" or not out.exists())


def video(path: Path, frames: int) -> Path:
    """An MJPG AVI of `frames` disc photos."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (96, 80))
    rng = np.random.default_rng(3)
    for _ in range(frames):
        image, _ = disc_photo(rng, 1)
        writer.write(cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), (96, 80)))
    writer.release()
    return path


def test_a_damaged_video_says_how_many_frames_could_not_be_read(trained: Path, tmp_path: Path) -> None:
    data = video(tmp_path / "clip.avi", 20).read_bytes()
    first = data.find(b"00dc", data.find(b"movi"))
    second = data.find(b"00dc", first + 8)
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(data[: second + 100])  # the header says 20 frames; the first one is whole
    out = tmp_path / "damaged.gif"
    result = i2c("cam", str(damaged), "-o", str(out), "--model", str(trained / "models/cam.pt"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 frames" in result.stdout and "19 of the 20 frames its header lists could not be read" in result.stderr


def test_a_photo_without_a_face_is_answered_with_a_note(trained: Path, tmp_path: Path) -> None:
    """CAM always draws a map; the user is told that align's detector finds no face there."""
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((160, 200, 3), 128, np.uint8))
    out = tmp_path / "blank_cam.png"
    result = i2c("cam", str(blank), "-o", str(out), "--model", str(trained / "models/cam.pt"), cwd=tmp_path)
    assert result.returncode == 0 and out.is_file(), result.stderr
    assert "finds no usable face in" in result.stderr and "(no_face)" in result.stderr
