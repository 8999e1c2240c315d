"""The DTN: g and D shapes and gradients, the losses on known inputs, a short training, the stage and `i2c emojify`."""

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
import torch.nn.functional as F
import yaml
from conftest import make_tiny_faces

from pipeline.core import traits
from pipeline.core.manifest import write_manifest
from pipeline.core.params import AlignParams, DtnParams, TrainParams, load_params
from pipeline.core.schema import TRAIT_COLUMNS
from pipeline.dataset.shards import write_dataset
from pipeline.models.dtn import (
    EmojiDecoder,
    TripleDiscriminator,
    discriminator_loss,
    distance,
    generator_gan_loss,
    to_encoder_input,
    total_variation,
)
from pipeline.models.face_encoder import save_f
from pipeline.models.vgg import VGG
from pipeline.sandbox.avatar import render_avatar
from pipeline.train.skeleton import train_model
from pipeline.train.train_dtn import Schedule, TrainDtn, run_key

REPO = Path(__file__).resolve().parents[1]


# ---- models -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "dropout"), [(32, 0.0), (64, 0.2)])
def test_g_and_d_shapes_no_nan_and_every_parameter_gets_a_gradient(size: int, dropout: float) -> None:
    g, d = EmojiDecoder(24, ngf=8, size=size, dropout=dropout), TripleDiscriminator(ndf=8, size=size)
    emoji = g(F.normalize(torch.randn(4, 24), dim=1))
    assert emoji.shape == (4, 3, size, size) and emoji.abs().max() <= 1
    logits = d(emoji)
    assert logits.shape == (4, 3) and torch.isfinite(logits).all()
    logits.sum().backward()
    for name, p in [*g.named_parameters(), *d.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_g_output_is_resized_to_f_input_with_gradients() -> None:
    emoji = torch.rand(2, 3, 64, 64, requires_grad=True)
    x = to_encoder_input(emoji * 2 - 1, 128)
    assert x.shape == (2, 3, 128, 128)
    x.sum().backward()
    assert emoji.grad is not None and emoji.grad.abs().sum() > 0


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="power of two"):
        EmojiDecoder(8, size=48)
    with pytest.raises(ValueError, match="power of two"):
        TripleDiscriminator(size=20)


# ---- losses -------------------------------------------------------------------------------------------------------
def test_total_variation_of_a_constant_image_is_zero_with_a_finite_gradient() -> None:
    image = torch.full((2, 3, 8, 8), 0.3, requires_grad=True)
    tv = total_variation(image)
    assert tv.item() == 0.0
    tv.backward()
    assert torch.isfinite(image.grad).all()


def test_total_variation_of_a_step_edge() -> None:
    image = torch.zeros(1, 1, 4, 4)
    image[..., 2:] = 1.0  # a vertical edge: |dx| = 1 on one of the three columns of differences
    assert total_variation(image).item() == pytest.approx(1 / 3)


def test_three_way_d_loss_on_known_logits() -> None:
    big = 20.0
    right = torch.tensor([[big, 0.0, 0.0]]), torch.tensor([[0.0, big, 0.0]]), torch.tensor([[0.0, 0.0, big]])
    loss, source = discriminator_loss(*right)
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and source.item() == pytest.approx(0.0, abs=1e-6)
    uniform = torch.zeros(3, 3)
    loss, source = discriminator_loss(uniform, uniform, uniform)
    assert loss.item() == pytest.approx(3 * np.log(3)) and source.item() == pytest.approx(np.log(3))
    # D sure that G's source output is a real avatar: the source term is the loss of a confident mistake
    loss, source = discriminator_loss(torch.tensor([[0.0, 0.0, big]]), *right[1:])
    assert source.item() == pytest.approx(big, rel=1e-4)
    # L_GANG is low exactly when D calls G's outputs real avatars
    assert generator_gan_loss(right[2], right[2]).item() == pytest.approx(0.0, abs=1e-6)
    assert generator_gan_loss(right[0], right[1]).item() == pytest.approx(2 * big, rel=1e-4)


def test_distances() -> None:
    a = torch.tensor([[1.0, 0.0]])
    assert distance(a, a, "cosine").item() == pytest.approx(0.0)
    assert distance(a, torch.tensor([[0.0, 1.0]]), "cosine").item() == pytest.approx(1.0)
    assert distance(a, torch.tensor([[3.0, 0.0]]), "mse").item() == pytest.approx(2.0)
    assert distance(a, torch.tensor([[3.0, 0.0]]), "l1").item() == pytest.approx(1.0)


def test_adaptive_schedule_switches_at_its_thresholds() -> None:
    schedule = Schedule("adaptive", 1, 1, low=0.35, high=1.0)
    assert schedule.plan() == (1, 0)
    schedule.observe(0.5)
    assert schedule.plan() == (1, 0)
    schedule.observe(0.3)
    assert schedule.plan() == (0, 1)
    schedule.observe(0.9)
    assert schedule.plan() == (0, 1)
    schedule.observe(1.2)
    assert schedule.plan() == (1, 0)
    assert Schedule("fixed", 2, 3, 0.35, 1.0).plan() == (2, 3)


def test_every_weight_shaping_param_changes_the_run_key() -> None:
    base = run_key(TrainParams(), DtnParams(), "data", "f")
    assert run_key(TrainParams(log_every=7), DtnParams(grid_photos=3, trait_steps=5), "data", "f").value == base.value
    for train, dtn in [
        (TrainParams(lr=0.001), DtnParams()),
        (TrainParams(batch_size=8), DtnParams()),
        (TrainParams(), DtnParams(alpha=10)),
        (TrainParams(), DtnParams(schedule="adaptive")),
        (TrainParams(), DtnParams(ngf=8)),
        (TrainParams(), DtnParams(decoder_steps=100)),
        (TrainParams(), DtnParams(diffaugment=["cutout"])),
    ]:
        assert run_key(train, dtn, "data", "f").value != base.value
    assert run_key(TrainParams(), DtnParams(), "data", "other f").value != base.value


# ---- tiny data and a tiny f ---------------------------------------------------------------------------------------
def make_tiny_avatars(root: Path, count: int = 96, side: int = 64) -> Path:
    """Packed `avatars` shards of sandbox renders (downscaled) with their trait columns; 3/4 train, 1/4 val + test."""
    catalogue = traits.parse_catalogue(traits.catalogue_json())
    specs = traits.sample_specs(catalogue, count, 0, traits.GENDERS, (5,))
    images, rows = [], []
    for i, spec in enumerate(specs):
        images.append(cv2.resize(render_avatar(spec), (side, side), interpolation=cv2.INTER_AREA))
        split = "train" if i % 4 else ("val" if i % 8 == 0 else "test")
        row = {"split": split, "label": -1, "identity": f"avatar_{i}", "gender": spec.gender, "style": spec.style}
        rows.append({**row, **spec.trait_dict})
    frame = pd.DataFrame(rows)
    index = write_dataset(frame, lambda i: (images[i], {}), root, shard_size=32)
    write_manifest(index.to_dict("records"), root / "index.parquet", list(index.columns), {})
    assert set(TRAIT_COLUMNS) <= set(index.columns)
    return root


def save_tiny_f(path: Path, classes: int = 4) -> Path:
    """An f.pt of an untrained narrow VGG (input 64) with default align params and a run key."""
    torch.manual_seed(0)
    arch = {"num_classes": classes, "input_size": 64, "width": 0.0625, "batch_norm": True, "dropout": 0.0}
    labels = [f"person_{i}" for i in range(classes)]
    info = {"align": AlignParams().model_dump(mode="json"), "run": {"key": "tiny-f"}}
    save_f(path, VGG(**arch).state_dict(), arch, labels, info)
    return path


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dtn")
    make_tiny_faces(root / "shards" / "faces", per_class=(24, 4, 6))
    make_tiny_avatars(root / "shards" / "avatars")
    save_tiny_f(root / "f.pt")
    return root


def workdir(root: Path, world: Path, steps: int, **dtn: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    params = {
        "pack": {"out_dir": str(world / "shards")},
        "pretrain_f": {"model": str(world / "f.pt")},
        "train": {"steps": steps, "batch_size": 16, "lr": 0.001, "log_every": 5, "eval_every": 10,
                  "checkpoint_every": 10, "runtime": {"threads": 1}},
        "dtn": {"ngf": 8, "ndf": 8, "emoji_size": 32, "grid_photos": 4, "trait_steps": 40, "decoder_steps": 0, **dtn},
    }  # fmt: skip
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def stage(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stages.train_dtn"], cwd=cwd, env=env(), capture_output=True, text=True, timeout=600
    )


def curve(path: Path) -> list[float]:
    return pd.read_csv(path, sep="\t")[path.stem].tolist()


# ---- training -----------------------------------------------------------------------------------------------------
def test_a_short_training_lowers_g_loss_and_writes_metrics_with_chance_and_grids(
    tmp_path: Path, tiny_world: Path
) -> None:
    # D is left untrained (d_steps 0) so that G's objective is a fixed target: its updates must descend it. With D
    # training too, 40 steps on this tiny world are a tug of war (test_adaptive_schedule_trains covers that path);
    # the tiny untrained f maps every face nearly alike, so L_CONST alone is small from the start.
    cwd = workdir(tmp_path / "run", tiny_world, steps=40, alpha=100.0, beta=1.0, schedule="fixed", d_steps=0)
    result = stage(cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    plots = cwd / "reports/train_dtn/plots"
    loss_g, const = curve(plots / "metrics/train/loss_G.tsv"), curve(plots / "metrics/train/L_CONST.tsv")
    assert len(loss_g) == 8 and loss_g[-1] < 0.7 * loss_g[0], loss_g
    assert const[-1] < const[0], const
    metrics = json.loads((cwd / "metrics/dtn.json").read_text())
    assert metrics["chance_rank"] == 12.5
    assert metrics["chance_top1"] == 0.25 and 1 <= metrics["median_rank"] <= 24
    assert metrics["traits_compared"] == 0 and metrics["traits"] == {}  # no held-out people with traits
    assert metrics["tid_mean_avatar"] > 0
    images = sorted(p.name for p in (plots / "images/photo_emoji").iterdir())
    assert images == [f"{step:06d}.png" for step in range(5, 45, 5)]  # a grid after every logged step
    grid = cv2.imread(str(plots / "images/photo_emoji_final.png"))
    assert grid.shape[1] == 2 + 8 * (32 + 2)  # 4 photo | emoji pairs per row
    details = json.loads((cwd / "reports/details/dtn.json").read_text())
    assert details["gallery"] == 24 and details["identities"] == 4
    ceiling = details["traits"]
    assert ceiling["gender"]["ceiling"] >= 0 and "balanced_accuracy" not in ceiling["gender"]
    assert 0 <= ceiling["gender"]["f_avatars"] <= 1 and "f_photos" not in ceiling["gender"]
    assert details["f_traits_read"] == 0 and details["people"] == 0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_d_judges_each_group_alone_in_d_and_g_updates(
    tmp_path: Path, tiny_world: Path, monkeypatch: pytest.MonkeyPatch, precision: str
) -> None:
    """D's BatchNorm must see the same kind of batch in both updates: one group (G(x), G(t) or real t) at a time.

    A mixed batch in D updates and an all-fake one in G updates let g fool D with noise (the default run's emoji
    were grey noise). `train.runtime.precision` reaches every forward pass of the step (D, g and f in L_CONST).
    """
    cwd = workdir(tmp_path / "groups", tiny_world, steps=2, schedule="fixed", d_steps=1, g_steps=1)
    params = yaml.safe_load((cwd / "params.yaml").read_text())
    params["train"]["runtime"]["precision"] = precision
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(cwd)
    seen: list[int] = []
    autocast: set[tuple[str, bool]] = set()
    forward, decode = TripleDiscriminator.forward, EmojiDecoder.forward

    def spy(self: TripleDiscriminator, emoji: torch.Tensor) -> torch.Tensor:
        if self.training:
            seen.append(int(emoji.shape[0]))
            autocast.add(("D", torch.is_autocast_enabled("cpu")))
        return forward(self, emoji)

    def spy_g(self: EmojiDecoder, embedding: torch.Tensor) -> torch.Tensor:
        if self.training:
            autocast.add(("g", torch.is_autocast_enabled("cpu")))
        return decode(self, embedding)

    def spy_f(self: VGG, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:  # f(G(x)) in L_CONST; f of the data is precomputed outside the step
            autocast.add(("f", torch.is_autocast_enabled("cpu")))
        return embed(self, x)

    embed = VGG.embed
    monkeypatch.setattr(TripleDiscriminator, "forward", spy)
    monkeypatch.setattr(EmojiDecoder, "forward", spy_g)
    monkeypatch.setattr(VGG, "embed", spy_f)
    train_model(TrainDtn(load_params(cwd / "params.yaml"), say=lambda _: None))
    # per step: D update on G(x), G(t), t; G update on G(x), G(t); batch 16 each
    assert seen == [16] * 10, seen
    assert autocast == {(net, precision == "bf16") for net in ("D", "g", "f")}


def test_decoder_steps_train_g_alone_on_avatars_before_the_gan(
    tmp_path: Path, tiny_world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During `decoder_steps` g decodes f(avatar) under L_TID (+ L_TV) alone: D neither trains nor judges, and
    L_CONST does not reach f; the GAN's step follows."""
    cwd = workdir(tmp_path / "decoder", tiny_world, steps=3, decoder_steps=2, d_steps=1, g_steps=1)
    params = yaml.safe_load((cwd / "params.yaml").read_text())
    params["train"]["log_every"] = 1
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(cwd)
    seen: list[tuple[str, int]] = []
    forward, decode = TripleDiscriminator.forward, EmojiDecoder.forward

    def spy(self: TripleDiscriminator, emoji: torch.Tensor) -> torch.Tensor:
        seen.append(("D", int(emoji.shape[0])))
        return forward(self, emoji)

    def spy_g(self: EmojiDecoder, embedding: torch.Tensor) -> torch.Tensor:
        if self.training:
            seen.append(("g", int(embedding.shape[0])))
        return decode(self, embedding)

    monkeypatch.setattr(TripleDiscriminator, "forward", spy)
    monkeypatch.setattr(EmojiDecoder, "forward", spy_g)
    train_model(TrainDtn(load_params(cwd / "params.yaml"), say=lambda _: None))
    # steps 1-2: g of 16 avatars' embeddings only; step 3: g of photos + avatars, then D on 3 groups, G on 2
    assert seen[:2] == [("g", 16), ("g", 16)], seen
    assert seen[2:] == [("g", 32)] + [("D", 16)] * 5, seen
    tid = curve(cwd / "reports/train_dtn/plots/metrics/train/L_TID.tsv")
    loss_d = curve(cwd / "reports/train_dtn/plots/metrics/train/loss_D.tsv")
    assert len(tid) == 3 and len(loss_d) == 1  # D's loss exists from the GAN's first step on


def test_diffaugment_reaches_every_image_d_sees(
    tmp_path: Path, tiny_world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `dtn.diffaugment: [cutout]`, every group D judges (in its update and in G's) has a zeroed square."""
    cwd = workdir(tmp_path / "augmented", tiny_world, steps=1, d_steps=1, g_steps=1, diffaugment=["cutout"])
    monkeypatch.chdir(cwd)
    seen: list[torch.Tensor] = []
    forward = TripleDiscriminator.forward

    def spy(self: TripleDiscriminator, emoji: torch.Tensor) -> torch.Tensor:
        seen.append(emoji.detach().clone())
        return forward(self, emoji)

    monkeypatch.setattr(TripleDiscriminator, "forward", spy)
    train_model(TrainDtn(load_params(cwd / "params.yaml"), say=lambda _: None))
    assert len(seen) == 5  # D's update: G(source), G(target), avatars; G's update: G(source), G(target)
    for group in seen:
        zeros = (group == 0).all(dim=1).flatten(1).sum(dim=1)  # (B,) pixels zero in every channel
        assert (zeros > 0).all() and (zeros <= (32 // 2) ** 2).all()


def test_adaptive_schedule_trains_and_missing_f_names_the_stage(tmp_path: Path, tiny_world: Path) -> None:
    cwd = workdir(tmp_path / "adaptive", tiny_world, steps=10, schedule="adaptive")
    result = stage(cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    d_updates = curve(cwd / "reports/train_dtn/plots/metrics/train/d_updates.tsv")
    assert all(0 <= u <= 1 for u in d_updates)
    params = yaml.safe_load((cwd / "params.yaml").read_text())
    params["pretrain_f"]["model"] = str(tmp_path / "nowhere.pt")
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))
    result = stage(cwd)
    assert result.returncode != 0 and "dvc repro pretrain_f" in result.stderr and "Traceback" not in result.stderr


# ---- trait classifier ---------------------------------------------------------------------------------------------
def test_trait_classifier_beats_chance_on_held_out_avatars(tmp_path: Path) -> None:
    from pipeline.dataset.loader import ShardDataset, to_model_input
    from pipeline.evaluate.traits import balanced_table, class_counts, predict_traits, train_trait_net, trait_classes

    root = make_tiny_avatars(tmp_path / "avatars", count=160)
    train, held = ShardDataset(root, "train"), [ShardDataset(root, "val"), ShardDataset(root, "test")]
    images = to_model_input(train.gather(np.arange(len(train)))["image"], 32)
    net = train_trait_net(images, trait_classes(train.index), class_counts(3), steps=150, lr=0.003, seed=0)
    held_images = torch.cat([to_model_input(s.gather(np.arange(len(s)))["image"], 32) for s in held])
    truth = trait_classes(pd.concat([s.index for s in held])).reset_index(drop=True)
    scores = balanced_table(predict_traits(net, held_images), truth)
    margins = {name: s.accuracy - s.chance for name, s in scores.items()}
    assert sum(m >= 0.1 for m in margins.values()) >= 2, margins
    assert scores["skin_tone"].accuracy > scores["skin_tone"].chance, margins


def test_embedding_probe_reads_a_trait_the_embedding_carries_and_not_one_it_lacks() -> None:
    """f's linear probe: a trait written along one feature (scaled and shifted, as raw embeddings are) is read on new
    points; a trait the features do not carry stays near chance; a trait with one class in training is skipped."""
    from pipeline.evaluate.traits import embedding_probe

    rng = np.random.default_rng(0)

    def world(n: int) -> tuple[torch.Tensor, pd.DataFrame]:
        tone = rng.integers(0, 3, n)
        features = rng.normal(size=(n, 16))
        features[:, 3] = 5.0 * tone + 40.0 + 0.3 * rng.normal(size=n)
        truth = pd.DataFrame({"skin_tone": tone, "glasses": rng.integers(0, 2, n), "hat": np.zeros(n, dtype=int)})
        return torch.tensor(features, dtype=torch.float32), truth

    (train, train_truth), test = world(300), world(400)
    scores = embedding_probe(train, train_truth, {"test": test}, {"skin_tone": 3, "glasses": 2, "hat": 2})["test"]
    assert scores["skin_tone"].accuracy > 0.95 and scores["skin_tone"].chance < 0.45
    assert abs(scores["glasses"].accuracy - 0.5) < 0.1, scores["glasses"]
    assert "hat" not in scores


def test_skin_tone_is_compared_by_brightness_rank() -> None:
    from pipeline.evaluate.traits import skin_tone_rank, trait_classes

    lightest, darkest = traits.rgb_to_tone(255, 224, 196), traits.rgb_to_tone(74, 46, 32)
    assert skin_tone_rank(lightest) == 0 and skin_tone_rank(darkest) == len(traits.SKIN_TONES) - 1
    row = {key: traits.NONE for key in traits.TRAIT_KEYS} | {"gender": 1, "style": 5, "hair": 2300}
    row["hair_tone"] = traits.HAIR_TONES[0]
    rows = pd.DataFrame([row | {"skin_tone": lightest}, row | {"skin_tone": darkest}])
    classes = trait_classes(rows, skin_tone_bins=3)
    assert classes["skin_tone"].tolist() == [0, 2] and classes["hair"].tolist() == [2, 2]
    assert trait_classes(pd.DataFrame({"gender": [None]}), 3).iloc[0].tolist() == [-1] * 7
