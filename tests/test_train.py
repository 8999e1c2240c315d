"""The training core: checkpoints (round trip, weights-only, refusals), the lr schedule, curves, DDP-exact counts."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pipeline.core.params import LoopParams
from pipeline.dataset.loader import ShardDataset, ShardStream, to_model_input
from pipeline.evaluate.classify import ClassCounts, chance_topk, majority_share
from pipeline.models.vgg import VGG
from pipeline.train.checkpoint import RunKey, find_resume
from pipeline.train.live import LiveLog, truncate_curves
from pipeline.train.loop import Trainer, eval_batches, lr_factor
from pipeline.train.runtime import Runtime, step_seed, torchrun_env

KEY = RunKey({"lr": 0.05, "width": 0.0625}, "code1", "data1")


class NotAWeight:
    """An arbitrary class: a weights-only load must refuse to build it."""


def _trainer(tmp_path: Path, steps: int, key: RunKey = KEY, seed: int = 0) -> tuple[Trainer, VGG]:
    torch.manual_seed(seed)
    model = VGG(num_classes=4, input_size=64, width=0.0625)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loop = LoopParams(steps=steps, batch_size=8, log_every=2, eval_every=3, checkpoint_every=4)
    trainer = Trainer(
        Runtime(torch.device("cpu")),
        loop,
        {"model": model},
        {"model": optimizer},
        key,
        checkpoint=tmp_path / "ck" / "last.pt",
        live_dir=tmp_path / "live",
        select=lambda m: (m["val/top1"],),
    )
    return trainer, model


def _fit(trainer: Trainer, model: VGG, shards: Path) -> None:
    train, val = ShardDataset(shards / "faces", "train"), ShardDataset(shards / "faces", "val")

    def step(batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        loss = F.cross_entropy(model(to_model_input(batch["image"], 64)), batch["label"])
        trainer.backward(loss)
        return {"train/loss": loss.detach()}

    def evaluate() -> dict[str, float]:
        batch = val.gather(np.arange(len(val)))
        logits = model(to_model_input(batch["image"], 64))
        return {"val/top1": float((logits.argmax(1) == batch["label"]).float().mean())}

    trainer.fit(ShardStream(train, 8, seed=1, drop_last=True), step, evaluate)


def test_checkpoint_round_trip_restores_model_optimizer_step_and_best(tmp_path: Path, tiny_faces: Path) -> None:
    trainer, model = _trainer(tmp_path, steps=6)
    assert "no checkpoint" in trainer.start()
    _fit(trainer, model, tiny_faces)
    trainer.close()
    saved = load_checkpoint(tmp_path / "ck" / "last.pt")
    assert saved["step"] == 6 and saved["run"]["key"] == KEY.value and saved["best"]["step"] in (3, 6)
    again, fresh = _trainer(tmp_path, steps=6, seed=1)  # other initial weights
    assert "resuming from step 6" in again.start()
    for name, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    before, after = trainer.optimizers["model"].state_dict(), again.optimizers["model"].state_dict()
    assert before["param_groups"] == after["param_groups"]
    for index, state in before["state"].items():
        assert torch.equal(state["momentum_buffer"], after["state"][index]["momentum_buffer"])
    assert again.best["step"] == saved["best"]["step"] and again.selected().keys() == model.state_dict().keys()
    again.close()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "pickled_object", "other_dict", "empty"])
def test_a_corrupt_or_foreign_checkpoint_is_named_with_the_fix(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"run": KEY.record(), "step": 1, "modules": {"m": {"w": torch.ones(3)}}})
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x89PNG not a checkpoint" * 10)
    elif damage == "pickled_object":
        torch.save({"format": "img2caricature/checkpoint-v1", "payload": NotAWeight()}, path)
    elif damage == "other_dict":
        torch.save({"state_dict": {"w": torch.ones(3)}}, path)
    else:
        path.write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        find_resume(path, KEY)
    assert str(path) in str(info.value) and "delete it" in str(info.value)


def test_weights_only_load_never_runs_pickled_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):  # what a malicious checkpoint would do on a full unpickle
            return (marker.write_text, ("pwned",))

    torch.save({"format": "img2caricature/checkpoint-v1", "x": Evil()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the file really is an exploit: a full unpickle runs it
    assert marker.read_text() == "pwned"


def test_a_stale_checkpoint_names_the_input_that_changed(tmp_path: Path) -> None:
    """train_dtn's key holds two inputs: when only f.pt changed, the message says so (not "the shards changed")."""
    path = tmp_path / "last.pt"
    before = RunKey({"lr": 0.1}, "code", {"the shards": "s1", "f.pt": "f1"})
    save_checkpoint(path, {"run": before.record(), "step": 3})
    found = find_resume(path, RunKey({"lr": 0.1}, "code", {"the shards": "s1", "f.pt": "f2"}))
    assert found.checkpoint is None and "other input data (f.pt changed)" in found.message
    assert find_resume(path, before).checkpoint is not None


@pytest.mark.parametrize(
    ("other", "reason"),
    [
        (RunKey({"lr": 0.1, "width": 0.0625}, "code1", "data1"), "other params (lr: 0.05 -> 0.1)"),
        (RunKey(dict(KEY.params), "code2", "data1"), "other code (version code1 -> code2)"),
        (RunKey(dict(KEY.params), "code1", "data2"), "other input data"),
    ],
)
def test_a_checkpoint_of_other_params_code_or_data_is_not_resumed(tmp_path: Path, other: RunKey, reason: str) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"run": KEY.record(), "step": 5, "modules": {}, "optimizers": {}, "best": None})
    assert find_resume(path, KEY).checkpoint is not None
    found = find_resume(path, other)
    assert found.checkpoint is None and reason in found.message and "starting fresh" in found.message


def test_lr_factor_warms_up_then_follows_a_cosine_to_zero() -> None:
    factors = [lr_factor(step, 100, warmup=10, schedule="cosine") for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[55] == pytest.approx(0.5) and factors[-1] < 0.001
    assert all(a >= b for a, b in itertools.pairwise(factors[9:]))
    assert {lr_factor(s, 100, 0, "constant") for s in range(100)} == {1.0}


def test_truncate_curves_drops_rows_after_the_checkpoint(tmp_path: Path) -> None:
    curve = tmp_path / "plots" / "metrics" / "train" / "loss.tsv"
    curve.parent.mkdir(parents=True)
    curve.write_text("step\tloss\n2\t1.0\n4\t0.8\n6\t0.7\n")
    truncate_curves(tmp_path / "plots" / "metrics", 4)
    assert curve.read_text() == "step\tloss\n2\t1.0\n4\t0.8\n"


def test_live_log_resumes_curves_and_starts_fresh_without_a_checkpoint(tmp_path: Path) -> None:
    live = LiveLog(tmp_path / "live")
    for step in (2, 4, 6):
        live.log(step, {"train/loss": 1.0 / step})
    live.close()
    curve = tmp_path / "live" / "plots" / "metrics" / "train" / "loss.tsv"
    live = LiveLog(tmp_path / "live", resume_step=4)
    live.log(6, {"train/loss": 0.1})
    live.close()
    assert [line.split("\t")[0] for line in curve.read_text().splitlines()] == ["step", "2", "4", "6"]
    LiveLog(tmp_path / "live").close()  # a fresh run clears the old curves
    assert not curve.exists()


def test_class_counts_add_up_and_expand() -> None:
    counts = ClassCounts(num_classes=3, ks=(1, 2))
    logits = torch.tensor([[3.0, 2.0, 1.0], [0.0, 1.0, 2.0], [1.0, 3.0, 2.0], [2.0, 1.0, 3.0]])
    counts.add(logits, torch.tensor([0, 1, 2, 0]), torch.tensor([0.5, 1.5, 1.0, 1.0]))
    assert counts.total == 4 and counts.topk(1) == 0.25 and counts.topk(2) == 1.0 and counts.loss() == 1.0
    assert counts.per_class() == [(1, 2), (0, 1), (0, 1)]
    assert counts.pairs() == ([0, 0, 1, 2], [0, 2, 2, 1])
    twice = counts.unpack(counts.packed() * 2)
    assert twice.total == 8 and twice.topk_hits == {1: 2, 2: 8} and twice.loss() == 1.0
    assert chance_topk(5, 16) == 5 / 16 and chance_topk(5, 3) == 1.0 and majority_share([2, 1, 1]) == 0.5


@pytest.mark.parametrize("world", [2, 3])
def test_eval_batches_count_every_sample_exactly_once_over_ranks(tiny_faces: Path, world: int) -> None:
    data = ShardDataset(tiny_faces / "faces", "val")  # 16 samples
    counted, batches = [], set()
    for rank in range(world):
        rt = Runtime(torch.device("cpu"), rank=rank, world_size=world)
        mine = list(eval_batches(rt, data, batch_size=5))
        batches.add(len(mine))
        counted += [int(r) for batch, keep in mine for r in batch["index"][keep]]
    assert sorted(counted) == sorted(data.rows.tolist()) and len(batches) == 1


def test_step_seeds_differ_by_step_and_rank_and_torchrun_env_is_read() -> None:
    seeds = {step_seed(0, s, r) for s in range(50) for r in range(2)}
    assert len(seeds) == 100 and all(0 <= s < 2**63 for s in seeds)
    assert torchrun_env({}) == (0, 1, 0, 1)
    env = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert torchrun_env(env) == (3, 4, 1, 2)
