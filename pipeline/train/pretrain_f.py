"""`pretrain_f`: train the VGG identity classifier on the face shards, select on val, test, and save f."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.params import CamParams, Params, PretrainFParams, resolved
from pipeline.core.reuse import code_version, shaping_params
from pipeline.core.viz import image_grid
from pipeline.dataset.loader import Augment, ShardDataset, ShardStream, to_model_input
from pipeline.evaluate.classify import ClassCounts, chance_topk, majority_share
from pipeline.models.face_encoder import save_f
from pipeline.models.vgg import VGG
from pipeline.train.checkpoint import CHECKPOINT_FILE, RunKey
from pipeline.train.loop import Trainer, TrainStep, eval_batches, lr_factor
from pipeline.train.runtime import Runtime, runtime

# Keys of the section that never change the trained weights: where things go and how often they are logged.
NOT_SHAPING = ("log_every", "checkpoint_every", "model", "metrics", "details", "run_log", "live_dir", "checkpoint_dir")
CONFUSION_FILE = "confusion.json"


class PretrainError(ValueError):
    """The face shards cannot train f as asked (too few samples, an empty split); the message says what to do."""


@dataclass(frozen=True)
class PretrainResult:
    """What a pretrain_f run produced: the flat metrics, the long details, and what the run itself did."""

    metrics: dict[str, Any]
    details: dict[str, Any]
    run: dict[str, Any]


@dataclass(frozen=True)
class FaceData:
    """The face shards' splits and label map."""

    train: ShardDataset
    val: ShardDataset
    test: ShardDataset
    labels: list[str]
    data_id: str


def read_faces(root: Path) -> FaceData:
    """Open the three splits of `root` (checksums verified) and its label map.

    Raises:
        PretrainError: when there are no labels, or the train or test split is empty.
        pipeline.dataset.loader.ShardError: for a missing or damaged shard.
    """
    splits = {name: ShardDataset(root, name) for name in ("train", "val", "test")}  # raises ShardError if missing
    index = pd.read_parquet(root / "index.parquet")
    pairs = index[index["label"] >= 0].drop_duplicates("label").sort_values("label")
    labels = list(pairs["identity"].astype(str))
    if not labels or list(pairs["label"]) != list(range(len(labels))):
        raise PretrainError(f"{root}/index.parquet has no identity labels 0..N-1; re-run `dvc repro pack`")
    for name in ("train", "test"):
        if len(splits[name]) == 0:
            raise PretrainError(f"the {name} split of {root} is empty; raise pack.{name}_fraction or crawl more photos")
    shards = index.drop_duplicates("shard").sort_values("shard")
    digest = hashlib.sha256()
    for row in shards.itertuples():
        digest.update(f"{row.shard}:{row.shard_sha256}\n".encode())
    digest.update("\n".join(labels).encode())
    return FaceData(splits["train"], splits["val"], splits["test"], labels, digest.hexdigest()[:16])


def build_model(section: PretrainFParams, num_classes: int) -> tuple[VGG, dict[str, Any]]:
    """The VGG of the section and its constructor arguments (saved in f.pt)."""
    arch = {
        "num_classes": num_classes,
        "input_size": section.input_size,
        "width": section.width,
        "batch_norm": section.batch_norm,
        "dropout": section.dropout,
    }
    return VGG(**arch), arch


def make_optimizer(section: PretrainFParams | CamParams, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW; no weight decay on biases and BatchNorm parameters."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": section.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if section.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=section.lr, betas=(section.momentum, 0.999))
    return torch.optim.SGD(groups, lr=section.lr, momentum=section.momentum, nesterov=section.momentum > 0)


def run_key(section: PretrainFParams, data_id: str) -> RunKey:
    """What f's weights depend on: the shaping params (threads left out), the code version and the data."""
    params = shaping_params(resolved(section), NOT_SHAPING)
    params["runtime"] = {k: v for k, v in params["runtime"].items() if k != "threads"}
    return RunKey(params, code_version("pipeline.train.pretrain_f"), data_id)


def classifier_step(
    rt: Runtime, net: nn.Module, trainer: Trainer, size: int, augment: Augment, label_smoothing: float
) -> TrainStep:
    """One classifier step: uint8 batch to the device, resize and augment there, forward, cross-entropy, step."""

    def train_step(batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        # ---- forward
        x = rt.memory_format(to_model_input(rt.to_device(batch["image"]), size, augment, generator))
        target = rt.to_device(batch["label"])
        with rt.autocast():
            logits = net(x).float()
        loss = F.cross_entropy(logits, target, label_smoothing=label_smoothing)
        # ---- backward and step
        trainer.backward(loss)
        return {"train/loss": loss.detach(), "train/top1": (logits.argmax(1) == target).float().mean()}

    return train_step


def count_split(
    rt: Runtime, model: nn.Module, data: ShardDataset, size: int, batch_size: int, flip: bool = False
) -> ClassCounts:
    """Confusion counts, top-1/top-5 hits and the cross-entropy of `model` on a split, summed over every rank.

    With `flip`, the logits are the mean of the face's and its mirror image's.
    """
    counts = ClassCounts(model.num_classes)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch, keep in eval_batches(rt, data, batch_size):
            if not keep.any():
                continue
            x = rt.memory_format(to_model_input(rt.to_device(batch["image"][keep]), size))
            with rt.autocast():
                logits = model(x).float()
                if flip:
                    logits = (logits + model(x.flip(3)).float()) / 2
            labels = rt.to_device(batch["label"][keep])
            counts.add(logits, labels, F.cross_entropy(logits, labels, reduction="none"))
    model.train(was_training)
    return counts.unpack(rt.all_sum(counts.packed())) if rt.distributed else counts


def sample_grid(data: ShardDataset, labels: list[str], count: int, size: int, augment: Augment | None) -> np.ndarray:
    """The first `count` faces of a split as the model sees them (augmented when `augment` is given)."""
    batch = data.gather(np.arange(min(count, len(data))))
    x = to_model_input(batch["image"], size, augment, torch.Generator().manual_seed(0))
    tiles = ((x.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()  # (B, S, S, 3)
    return image_grid(list(tiles), cols=8, labels=[labels[i][:14] for i in batch["label"].tolist()])


def prediction_grid(model: VGG, data: ShardDataset, labels: list[str], size: int, count: int = 32) -> np.ndarray:
    """Test faces labelled `true > predicted` (wrong ones first), to see what f confuses."""
    batch = data.gather(np.arange(len(data)))
    model.eval()
    with torch.no_grad():
        device = next(model.parameters()).device
        predicted = model(to_model_input(batch["image"].to(device), size)).argmax(1).cpu()
    wrong = (predicted != batch["label"]).numpy()
    order = np.argsort(~wrong, kind="stable")[:count]
    names = [f"{labels[t][:10]}>{labels[p][:10]}" for t, p in zip(batch["label"][order], predicted[order], strict=True)]
    return image_grid(list(batch["image"][order].numpy()), cols=8, labels=names)


def details(test: ClassCounts, val: dict[str, float], labels: list[str], best_step: int) -> dict[str, Any]:
    """The long breakdown beside the metrics: test accuracy and top confusion per identity, the selected step."""
    per_identity = {}
    for i, (correct, total) in enumerate(test.per_class()):
        row = test.confusion[i].clone()
        row[i] = 0
        confused = labels[int(row.argmax())] if int(row.max()) > 0 else None
        accuracy = round(correct / total, 4) if total else None
        per_identity[labels[i]] = {"accuracy": accuracy, "test_images": total, "most_confused_with": confused}
    selected = {"step": best_step, **{k.replace("/", "_"): round(v, 4) for k, v in val.items()}}
    return {"per_identity": per_identity, "selected": selected, "test_loss": round(test.loss(), 4)}


def flat_metrics(test: ClassCounts, val: dict[str, float], data: FaceData, best_step: int) -> dict[str, Any]:
    """The few numbers of metrics/pretrain_f.json, with chance beside the accuracies."""
    n = len(data.labels)
    metrics = {
        "test_top1": round(test.topk(1), 4),
        "test_top5": round(test.topk(5), 4),
        "chance_top1": round(chance_topk(1, n), 4),
        "chance_top5": round(chance_topk(5, n), 4),
        "majority_top1": round(majority_share([total for _, total in test.per_class()]), 4),
        "identities": n,
        "test_images": test.total,
        "train_images": len(data.train),
        "selected_step": best_step,
    }
    if "val/top1" in val:  # no val split: the last weights, nothing selected
        metrics["val_top1"] = round(val["val/top1"], 4)
    return metrics


def classifier_trainer(
    rt: Runtime,
    section: PretrainFParams | CamParams,
    model: nn.Module,
    key: RunKey,
    data: FaceData,
    names: tuple[str, str],
    say: Callable[[str], None],
) -> tuple[Trainer, ShardStream, Augment]:
    """The Trainer (one optimiser, the best val top-1 kept), batch stream and augmentation of a classifier section.

    `pretrain_f` and `train_cam` train alike; `names` is (the stage, its params section), for messages.

    Raises:
        PretrainError: when the training split makes no batch.
    """
    trainer = Trainer(
        rt,
        section,
        {"model": model},
        {"model": make_optimizer(section, model)},
        key,
        checkpoint=Path(section.checkpoint_dir) / CHECKPOINT_FILE,
        live_dir=Path(section.live_dir),
        select=(lambda m: (m["val/top1"], -m["val/loss"])) if len(data.val) else None,
        lr_at=lambda step: lr_factor(step, section.steps, section.warmup_steps, section.schedule),
    )
    stage, section_key = names
    message = trainer.start()
    if rt.is_main:
        say(f"{stage}: {message}")
    stream = ShardStream(data.train, section.batch_size, shuffle=True, seed=section.seed, drop_last=True)
    if len(stream) == 0:
        raise PretrainError(
            f"{len(data.train)} training images over {rt.world_size} rank(s) make no batch of {section.batch_size}; "
            f"lower {section_key}.batch_size"
        )
    return trainer, stream, Augment(**section.augment.model_dump())


def pretrain_f(params: Params, say: Callable[[str], None] = print) -> PretrainResult:
    """Train f per params.pretrain_f on `<pack.out_dir>/faces`; writes f.pt and the plots, returns the numbers.

    Under torchrun every rank trains on its share of each batch order and rank 0 writes the files.

    Raises:
        PretrainError: for data that cannot train f.
        pipeline.train.checkpoint.CheckpointError: for a corrupt or foreign checkpoint file.
    """
    section = params.pretrain_f
    data = read_faces(Path(params.pack.out_dir) / "faces")
    labels, size = data.labels, section.input_size
    with runtime(section.runtime, section.seed) as rt:
        model, arch = build_model(section, len(labels))
        net = rt.prepare(model)
        trainer, stream, augment = classifier_trainer(
            rt, section, model, run_key(section, data.data_id), data, ("pretrain_f", "pretrain_f"), say
        )
        if rt.is_main:
            grid = sample_grid(data.train, labels, 32, size, augment)
            trainer.live.image("train_augmented.png", grid, step=trainer.step)
        train_step = classifier_step(rt, net, trainer, size, augment, section.label_smoothing)

        def evaluate() -> dict[str, float]:
            counts = count_split(rt, model, data.val, size, section.batch_size, section.eval_flip)
            return {"val/top1": counts.topk(1), "val/top5": counts.topk(5), "val/loss": counts.loss()}

        fit = trainer.fit(stream, train_step, evaluate if len(data.val) else None)
        model.load_state_dict(trainer.selected())
        best = trainer.best or {"step": trainer.step, "metrics": {}}
        test = count_split(rt, model, data.test, size, section.batch_size, section.eval_flip)
        metrics = flat_metrics(test, best["metrics"], data, int(best["step"]))
        run = fit.record(rt.world_size, rt.device)
        if rt.is_main:
            write_outputs(section, params, model, arch, data, test, metrics, trainer)
            say(
                f"pretrain_f: {fit.step - fit.start_step} steps in {fit.seconds:.1f} s "
                f"({run['images_per_s']:.0f} img/s, data wait {fit.data_wait_share:.1%}), selected step {best['step']}"
            )
        trainer.close()
    return PretrainResult(metrics, details(test, best["metrics"], labels, int(best["step"])), run)


def write_outputs(
    section: PretrainFParams,
    params: Params,
    model: VGG,
    arch: dict[str, Any],
    data: FaceData,
    test: ClassCounts,
    metrics: dict[str, Any],
    trainer: Trainer,
) -> None:
    """f.pt, the confusion plot and the test prediction grid."""
    labels = data.labels
    info = {
        "params": resolved(section),
        "align": resolved(params.align),
        "run": trainer.key.record(),
        "metrics": metrics,
    }
    save_f(Path(section.model), model.state_dict(), arch, labels, info)
    actual, predicted = test.pairs()
    trainer.live.confusion(CONFUSION_FILE, [labels[i] for i in actual], [labels[i] for i in predicted])
    trainer.live.image("test_predictions.png", prediction_grid(model, data.test, labels, section.input_size))
