"""Avatar parameters from a photo: the reader and its heads, valid decoding, the JSON a user gets, the stage, and
`i2c emojify`."""

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
import torch
import yaml
from conftest import huge_png
from test_dtn import make_tiny_avatars, save_tiny_f

from pipeline.core import traits
from pipeline.core.manifest import write_manifest
from pipeline.core.trait_classes import TRAITS
from pipeline.dataset.shards import write_dataset
from pipeline.evaluate.avatar_params import predict_specs
from pipeline.infer.emojify import query_json
from pipeline.models.avatar_params import (
    PREDICTED_KEYS,
    AvatarParamsNet,
    AvatarReader,
    class_targets,
    spec_rows,
    vocabulary,
)
from pipeline.models.multitask import TwoDomainNet, reverse_gradient
from pipeline.models.vgg import VGG
from pipeline.sandbox.avatar import render_avatar
from pipeline.sandbox.photo import identity_spec

REPO = Path(__file__).resolve().parents[1]


# ---- the heads --------------------------------------------------------------------------------------------------
def test_heads_shapes_no_nan_and_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    net = AvatarParamsNet(32, hidden=16)
    logits = net(torch.randn(5, 32))
    vocab = vocabulary()
    assert set(PREDICTED_KEYS) == set(vocab) and set(logits) == {*vocab, *(f"trait/{t}" for t in TRAITS)}
    assert all(logits[k].shape == (5, len(vocab[k])) for k in vocab)
    assert logits["trait/hair"].shape == (5, 3) and all(torch.isfinite(v).all() for v in logits.values())
    targets = {k: torch.randint(v.shape[1], (5,)) for k, v in logits.items()}
    targets["beard"][0] = -1  # unknown: left out
    loss = net.loss(logits, targets)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    linear = AvatarParamsNet(32, hidden=0, dropout=0.0)
    assert isinstance(linear.trunk, torch.nn.Identity) and linear.heads["jaw"].in_features == 32


def test_the_reader_reads_images_of_its_side_with_finite_logits_and_gradients_everywhere() -> None:
    torch.manual_seed(0)
    reader = AvatarReader(input_size=32, width=4, depth=3)
    assert reader.encoder.embed_dim == 16
    logits = reader(torch.rand(3, 3, 32, 32) * 2 - 1)
    assert logits["trait/skin_tone"].shape == (3, 3) and all(torch.isfinite(v).all() for v in logits.values())
    loss = reader.loss(logits, {k: torch.randint(v.shape[1], (3,)) for k, v in logits.items()})
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in reader.parameters())
    reader.eval()
    specs = predict_specs(reader, torch.randint(0, 256, (2, 50, 50, 3), dtype=torch.uint8), 5)
    assert len(specs) == 2 and all(traits.validate_query(s.query())[0] == s for s in specs)


def test_decoded_avatars_are_always_queries_the_catalogue_accepts() -> None:
    torch.manual_seed(1)
    net = AvatarParamsNet(8, hidden=0)
    logits = {k: torch.randn(64, v.shape[1]) * 5 for k, v in net(torch.zeros(1, 8)).items()}
    for style in traits.STYLES:
        for spec in net.decode(logits, style):
            parsed, bad, message = traits.validate_query(spec.query())
            assert parsed == spec, (bad, message)
            assert spec.style == style
            if spec.gender == 2:
                assert spec.trait_dict["beard"] == traits.NONE  # no woman's avatar gets a beard
            if style == 4:
                assert spec.trait_dict["eyelash"] == traits.NONE


def test_class_targets_map_values_and_mark_unknown_ones() -> None:
    vocab = vocabulary()
    rows = pd.DataFrame({"gender": [1, 2], "hat": [traits.NONE, 2103], "jaw": [1000, 99999]})
    targets = class_targets(rows, vocab)
    assert targets["gender"].tolist() == [0, 1]
    assert targets["hat"].tolist() == [vocab["hat"].index(-1), vocab["hat"].index(2103)]
    assert targets["jaw"].tolist() == [0, -1]  # not a catalogue value
    assert targets["nose"].tolist() == [-1, -1]  # no such column
    assert targets["trait/hat"].tolist() == [-1, -1]  # without every trait column, no trait classes
    spec = identity_spec("Ada Lovelace", 0)
    full = class_targets(spec_rows([spec]), vocab)
    assert full["trait/glasses"].tolist() == [int(spec.trait_dict["glasses"] != traits.NONE)]
    assert full["trait/gender"].tolist() == [spec.gender - 1]


def test_two_domain_net_and_gradient_reversal() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, requires_grad=True)
    reverse_gradient(x, 0.5).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -0.5))
    vgg = VGG(4, input_size=64, width=0.0625, dropout=0.0)
    net = TwoDomainNet(vgg, AvatarParamsNet(vgg.embed_dim, hidden=0), domain_hidden=8)
    logits, avatar, domain = net(torch.randn(2, 3, 64, 64), torch.randn(3, 3, 64, 64), reverse=1.0)
    assert logits.shape == (2, 4) and avatar["gender"].shape == (3, 2) and domain is not None and domain.shape == (5,)


# ---- what a user gets -------------------------------------------------------------------------------------------
def test_json_round_trips_through_the_renderer_to_the_same_image() -> None:
    spec = identity_spec("Ada Lovelace", 0)
    body = json.loads(json.dumps(query_json(spec)))
    assert "url" not in body  # the offline sandbox has no preview URL to give
    assert body["gender"] == spec.gender and body["skin_tone"] == spec.trait_dict["skin_tone"]
    assert all(isinstance(v, int) for v in body.values())
    parsed, _, message = traits.validate_query({k: str(v) for k, v in body.items()})
    assert parsed is not None, message
    assert np.array_equal(render_avatar(parsed), render_avatar(spec))
    with_url = query_json(spec, "https://avatars.example/")
    assert (
        with_url["url"].startswith("https://avatars.example/") and f"skin_tone={body['skin_tone']}" in with_url["url"]
    )


def test_the_sandbox_serves_every_decoded_avatar(tmp_path: Path) -> None:
    import urllib.request

    from pipeline.core.params import SandboxParams
    from pipeline.sandbox.app import preview_url
    from pipeline.sandbox.server import SandboxServer

    torch.manual_seed(2)
    net = AvatarParamsNet(8, hidden=0)
    specs = net.decode({k: torch.randn(6, v.shape[1]) * 5 for k, v in net(torch.zeros(1, 8)).items()}, 5)
    with SandboxServer(SandboxParams()) as server:
        for spec in specs:
            with urllib.request.urlopen(preview_url(server.url, spec), timeout=30) as response:
                assert response.status == 200
                image = cv2.imdecode(np.frombuffer(response.read(), np.uint8), cv2.IMREAD_COLOR)
            assert np.array_equal(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), render_avatar(spec))


# ---- the stage ----------------------------------------------------------------------------------------------------
def make_people(root: Path, side: int = 64) -> Path:
    """Face shards of sandbox people drawn as avatars (style 5): 4 trained identities (train/val/test photos) and
    2 held-out people (people_val, people_test), with their trait columns."""
    images, rows = [], []
    names = [f"Person {i}" for i in range(6)]
    for i, name in enumerate(names):
        spec = identity_spec(name, 0)
        face = cv2.resize(render_avatar(spec), (side, side), interpolation=cv2.INTER_AREA)
        splits = ["train"] * 6 + ["val", "test"] if i < 4 else ["people_val" if i == 4 else "people_test"] * 5
        for split in splits:
            noisy = np.clip(face.astype(int) + np.random.default_rng(len(rows)).integers(-20, 20, face.shape), 0, 255)
            images.append(noisy.astype(np.uint8))
            row = {"split": split, "label": i if i < 4 else -1, "identity": name, "gender": spec.gender}
            rows.append({**row, "style": spec.style, **spec.trait_dict})
    index = write_dataset(pd.DataFrame(rows), lambda i: (images[i], {}), root, shard_size=16)
    write_manifest(index.to_dict("records"), root / "index.parquet", list(index.columns), {})
    return root


@pytest.fixture(scope="module")
def people_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("avatar-params")
    make_people(root / "shards" / "faces")
    make_tiny_avatars(root / "shards" / "avatars")
    save_tiny_f(root / "f.pt")
    return root


def workdir(root: Path, world: Path, steps: int, **section: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    params = {
        "pack": {"out_dir": str(world / "shards")},
        "pretrain_f": {"model": str(world / "f.pt")},
        "avatar_params": {"steps": steps, "batch_size": 16, "log_every": 5, "eval_every": 5, "checkpoint_every": 5,
                          "input_size": 32, "width": 4, "depth": 2, "grid_people": 2, "runtime": {"threads": 1},
                          **section},
    }  # fmt: skip
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def stage(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stages.train_avatar_params"], cwd=cwd, env=env(), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip


def test_the_stage_selects_on_val_people_reports_test_people_with_chance_and_draws_the_grid(
    tmp_path: Path, people_world: Path
) -> None:
    cwd = workdir(tmp_path / "run", people_world, steps=15)
    result = stage(cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "held-out people" in result.stdout
    metrics = json.loads((cwd / "metrics/avatar_params.json").read_text())
    assert metrics["people"] == 1 and metrics["traits_compared"] == 7
    for name, row in metrics["traits"].items():
        assert 0 <= row["balanced_accuracy"] <= 1 and row["chance"] == pytest.approx(1 / row["classes"]), name
        assert row["count"] == 5  # the test person's five photos
    details = json.loads((cwd / "reports/details/avatar_params.json").read_text())
    assert details["selected"]["step"] in (5, 10, 15) and "val_people_balanced" in details["selected"]
    assert set(details["people_test_keys"]) == set(PREDICTED_KEYS)
    assert list(details["per_person"]) == ["Person 5"]
    grid = cv2.imread(str(cwd / "reports/train_avatar_params/plots/images/people_avatars.png"))
    assert grid is not None and grid.shape[0] == 96 + 4  # one row: photo | predicted | true
    model = cwd / "models/avatar_params.pt"
    from pipeline.models.avatar_params import load_avatar_params

    net, info = load_avatar_params(model)
    assert info["style"] == 5 and net.input_size == 32 and set(net.vocab) == set(PREDICTED_KEYS)
    again = stage(cwd)  # the same params, code and data: resumed at the end, the same answers
    assert again.returncode == 0 and "resuming from step 15" in again.stdout, again.stdout
    assert json.loads((cwd / "metrics/avatar_params.json").read_text()) == metrics


def test_without_held_out_people_the_stage_draws_test_photos_and_makes_no_trait_verdict(
    tmp_path: Path, people_world: Path
) -> None:
    """Real photos are often packed with every person trained on: the heads still train on avatars and draw the photo
    test split, but traits are judged only on people no model saw, so none is reported."""
    world = tmp_path / "world"
    make_tiny_avatars(world / "shards" / "avatars")
    from conftest import make_tiny_faces

    make_tiny_faces(world / "shards" / "faces")
    save_tiny_f(world / "f.pt")
    cwd = workdir(tmp_path / "run", world, steps=5)
    result = stage(cwd)
    assert result.returncode == 0, result.stderr
    assert "no trait verdicts" in result.stdout and "pack.people_test_fraction" in result.stdout
    metrics = json.loads((cwd / "metrics/avatar_params.json").read_text())
    assert metrics["traits"] == {} and metrics["traits_compared"] == 0 and metrics["people"] == 0
    assert (cwd / "reports/train_avatar_params/plots/images/people_avatars.png").is_file()


# ---- i2c emojify --------------------------------------------------------------------------------------------------
def i2c(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def emojify_world(people_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = workdir(tmp_path_factory.mktemp("emojify"), people_world, steps=5)
    result = stage(cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    params = yaml.safe_load((cwd / "params.yaml").read_text())
    params["train"] = {"steps": 5, "batch_size": 8, "log_every": 5, "eval_every": 5, "checkpoint_every": 5,
                       "runtime": {"threads": 1}}  # fmt: skip
    params["dtn"] = {"ngf": 8, "ndf": 8, "emoji_size": 32, "grid_photos": 2, "trait_steps": 5}
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(
        [sys.executable, "-m", "stages.train_dtn"], cwd=cwd, env=env(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return cwd


def a_photo(faces_dev: Path, n: int = 0) -> Path:
    person = sorted(p for p in faces_dev.iterdir() if p.is_dir())[n]
    return sorted(person.iterdir())[0]


def test_emojify_draws_the_predicted_avatar_writes_its_json_and_the_dtn_emoji(
    emojify_world: Path, faces_dev: Path, tmp_path: Path
) -> None:
    photo = a_photo(faces_dev)
    out, body, dtn = tmp_path / "avatar.png", tmp_path / "avatar.json", tmp_path / "dtn.png"
    result = i2c("emojify", str(photo), "-o", str(out), "--json", str(body), "--dtn", str(dtn), cwd=emojify_world)
    assert result.returncode == 0, result.stderr
    avatar = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    query = json.loads(body.read_text())
    spec, _, message = traits.validate_query({k: str(v) for k, v in query.items()})
    assert spec is not None, message
    assert np.array_equal(avatar, render_avatar(spec)), "the PNG is the engine's render of the JSON's parameters"
    assert cv2.imread(str(dtn)).shape == (32, 32, 3)
    again = tmp_path / "again.png"
    assert i2c("emojify", str(photo), "-o", str(again), "--style", "4", cwd=emojify_world).returncode == 0
    flat = cv2.cvtColor(cv2.imread(str(again)), cv2.COLOR_BGR2RGB)
    assert not np.array_equal(flat, avatar)  # the flat look of the same parameters
    pair = tmp_path / "pair.png"
    assert i2c("emojify", str(photo), "-o", str(pair), "--side-by-side", cwd=emojify_world).returncode == 0
    assert cv2.imread(str(pair)).shape == (152, 152 + 4 + 152, 3)


def test_emojify_answers_a_folder_once_per_photo_with_a_reason_for_each_one_it_cannot(
    emojify_world: Path, faces_dev: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for n in range(2):
        (folder / f"p{n}{a_photo(faces_dev, n).suffix}").write_bytes(a_photo(faces_dev, n).read_bytes())
    (folder / "broken.jpg").write_text("not a photo")
    (folder / "notes.txt").write_text("skipped: not a photo suffix")
    out, bodies = tmp_path / "avatars", tmp_path / "json"
    result = i2c("emojify", str(folder), "-o", str(out), "--json", str(bodies), cwd=emojify_world)
    assert result.returncode == 1  # one photo could not be answered
    assert "broken.jpg is not an image that can be decoded" in result.stderr and "Traceback" not in result.stderr
    assert "2 of 3 photos answered" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["p0.png", "p1.png"]
    assert sorted(p.name for p in bodies.iterdir()) == ["p0.json", "p1.json"]


def test_emojify_keeps_a_folder_of_people_s_folders_in_its_outputs(
    emojify_world: Path, faces_dev: Path, tmp_path: Path
) -> None:
    """The real-photo layout (`<person>/<photos>`, the same file name in several people's folders) is answered at any
    depth, and the outputs mirror it, so no two photos write one file."""
    folder = tmp_path / "people"
    for n, person in enumerate(("ann", "bob")):
        (folder / person).mkdir(parents=True)
        (folder / person / "01.jpg").write_bytes(a_photo(faces_dev, n).read_bytes())
    out = tmp_path / "avatars"
    result = i2c("emojify", str(folder), "-o", str(out), cwd=emojify_world)
    assert result.returncode == 0, result.stderr
    assert f"2 of 2 photos answered, in {out}/" in result.stdout
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["ann/01.png", "bob/01.png"]
    flat = tmp_path / "flat"  # the same two files named on the command line would collide: refused, nothing written
    result = i2c("emojify", str(folder / "ann/01.jpg"), str(folder / "bob/01.jpg"), "-o", str(flat), cwd=emojify_world)
    assert result.returncode == 1 and "share the name '01'" in result.stderr and not flat.exists()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("text", "is not an image that can be decoded"),
        ("blank", "shows no face the detector can find"),
        ("missing_photo", "not found; pass the path of a photo"),
        ("missing_model", "dvc repro train_avatar_params"),
        ("missing_dtn", "dvc repro train_dtn"),
        ("missing_f", "dvc repro pretrain_f"),
        ("other_f", "was trained on another f"),
        ("out_folder", "is a folder; pass the path of the file to write"),
        ("huge_png", "(too_many_pixels)"),
        ("bad_style", "--style 3 is not a style"),
        ("empty_folder", "no photo"),
    ],
)
def test_emojify_bad_input_gets_a_clear_message_and_exit_1(
    emojify_world: Path, tmp_path: Path, case: str, expected: str
) -> None:
    from pipeline.models.face_encoder import load_f, save_f

    photo, out = tmp_path / "photo.png", tmp_path / "out.png"
    if case == "text":
        photo.write_text("not a photo")
    elif case == "empty_folder":
        photo.mkdir()
    elif case == "huge_png":
        huge_png(photo)
    elif case != "missing_photo":
        cv2.imwrite(str(photo), np.tile(np.linspace(0, 255, 200, dtype=np.uint8)[None, :, None], (160, 1, 3)))
    if case == "out_folder":
        out.mkdir()
    args = ["emojify", str(photo), "-o", str(out)]
    if case == "missing_model":
        args += ["--model", str(tmp_path / "none.pt")]
    elif case == "missing_dtn":
        args += ["--dtn", str(tmp_path / "dtn.png"), "--dtn-model", str(tmp_path / "none.pt")]
    elif case == "missing_f":
        args += ["--f", str(tmp_path / "none.pt")]
    elif case == "bad_style":
        args += ["--style", "3"]
    elif case == "other_f":
        other = save_tiny_f(tmp_path / "other_f.pt")
        encoder = load_f(other)
        arch = {"num_classes": 4, "input_size": 64, "width": 0.0625, "batch_norm": True, "dropout": 0.0}
        save_f(other, encoder.net.state_dict(), arch, encoder.labels, {**encoder.info, "run": {"key": "another-f"}})
        args += ["--f", str(other), "--dtn", str(tmp_path / "dtn.png")]  # the DTN was trained on another f
    result = i2c(*args, cwd=emojify_world)
    assert result.returncode == 1 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and (case == "out_folder" or not out.exists())


def test_spec_rows_have_the_api_columns() -> None:
    spec = identity_spec("Ada Lovelace", 0)
    row = spec_rows([spec]).iloc[0]
    assert row["gender"] == spec.gender and row["style"] == 5 and row["hat"] == spec.trait_dict["hat"]


def test_traits_are_decided_by_their_heads_and_other_parts_by_presence() -> None:
    net = AvatarParamsNet(4, hidden=0)
    logits = {k: torch.zeros(1, v.out_features) for k, v in net.heads.items()}
    logits["trait/gender"] = torch.tensor([[0.0, 3.0]])  # a woman
    logits["trait/glasses"] = torch.tensor([[0.0, 1.0]])  # glasses are more likely than none ...
    glasses = net.vocab["glasses"]
    p = torch.full((len(glasses),), 0.1)
    p[glasses.index(traits.NONE)] = 0.4  # ... although "none" is the glasses key's single most likely option
    p[glasses.index(2003)] = 0.12
    logits["glasses"] = p.log()[None]
    logits["trait/hat"] = torch.tensor([[2.0, 0.0]])  # no hat
    logits["trait/hair"] = torch.tensor([[5.0, 0.0, 1.0]])  # "bald" is no option for a woman: long is the best left
    eyelash = net.vocab["eyelash"]
    q = torch.full((len(eyelash),), 0.2)
    q[eyelash.index(traits.NONE)] = 0.4  # eyelashes are 0.6 likely (no trait head): drawn
    logits["eyelash"] = q.log()[None]
    spec = net.decode(logits, 5)[0]
    assert spec.gender == 2 and spec.trait_dict["glasses"] == 2003 and spec.trait_dict["hat"] == traits.NONE
    assert spec.trait_dict["hair"] >= 2300 and spec.trait_dict["beard"] == traits.NONE
    assert spec.trait_dict["eyelash"] != traits.NONE
