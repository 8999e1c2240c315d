"""What the two identity classifiers (`pretrain_f`, `train_cam`) share: their data, optimiser, step and val check."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.params import CamParams, PretrainFParams
from pipeline.core.runner import StageError
from pipeline.dataset.loader import Augment, ShardDataset, to_model_input
from pipeline.evaluate.classify import ClassCounts
from pipeline.train.loop import eval_batches, lr_factor
from pipeline.train.runtime import Runtime
from pipeline.train.skeleton import ModelStage, Networks


@dataclass(frozen=True)
class FaceData:
    """A shard folder's splits and label map."""

    train: ShardDataset
    val: ShardDataset
    test: ShardDataset
    labels: list[str]
    data_id: str


def read_faces(root: Path) -> FaceData:
    """Open the three splits of `root` (checksums verified) and its label map.

    Raises:
        StageError: when there are no labels, or the train or test split is empty.
        pipeline.dataset.loader.ShardError: for a missing or damaged shard.
    """
    splits = {name: ShardDataset(root, name) for name in ("train", "val", "test")}  # raises ShardError if missing
    index = pd.read_parquet(root / "index.parquet")
    pairs = index[index["label"] >= 0].drop_duplicates("label").sort_values("label")
    labels = list(pairs["identity"].astype(str))
    if not labels or list(pairs["label"]) != list(range(len(labels))):
        raise StageError(f"{root}/index.parquet has no identity labels 0..N-1; re-run `dvc repro pack`")
    for name in ("train", "test"):
        if len(splits[name]) == 0:
            raise StageError(f"the {name} split of {root} is empty; raise pack.{name}_fraction or crawl more photos")
    shards = index.drop_duplicates("shard").sort_values("shard")
    digest = hashlib.sha256()
    for row in shards.itertuples():
        digest.update(f"{row.shard}:{row.shard_sha256}\n".encode())
    digest.update("\n".join(labels).encode())
    return FaceData(splits["train"], splits["val"], splits["test"], labels, digest.hexdigest()[:16])


def make_optimizer(section: PretrainFParams | CamParams, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW; no weight decay on biases and BatchNorm parameters."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": section.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if section.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=section.lr, betas=(section.momentum, 0.999))
    return torch.optim.SGD(groups, lr=section.lr, momentum=section.momentum, nesterov=section.momentum > 0)


def count_split(
    rt: Runtime, model: nn.Module, data: ShardDataset, size: int, batch_size: int, flip: bool = False
) -> ClassCounts:
    """Confusion counts, top-1/top-5 hits and the cross-entropy of `model` on a split, summed over every rank.

    With `flip`, the logits are the mean of the image's and its mirror image's.
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


def best_on_val(metrics: dict[str, float]) -> tuple[float, ...]:
    """Model selection of both classifiers: the best val top-1, then the lowest val loss."""
    return metrics["val/top1"], -metrics["val/loss"]


class ClassifierStage(ModelStage):
    """An identity classifier on one shard folder: one optimiser with warm-up and schedule, cross-entropy with label
    smoothing, per-sample augmentation on the device, and the best val top-1 kept.

    A subclass reads `self.data`, builds its model and hands it to `networks`.
    """

    show = ("train/loss", "train/top1")
    data: FaceData
    model: nn.Module  # for state dicts, evaluation and the optimiser
    net: nn.Module  # what the training forward pass calls (the model, or its DDP/compiled wrapper)
    augment: Augment

    def networks(self, model: nn.Module, net: nn.Module, extra: dict[str, nn.Module] | None = None) -> Networks:
        """The one optimiser of `model` (and of the `extra` modules trained beside it, checkpointed by name), the lr
        schedule, and selection on val when there is a val split."""
        self.model, self.net = model, net
        self.augment = Augment(**self.section.augment.model_dump())
        select = best_on_val if len(self.data.val) else None
        modules = {"model": model, **(extra or {})}
        optimizer = make_optimizer(self.section, nn.ModuleList(modules.values()))
        return Networks(modules, {"model": optimizer}, select, self.lr_at)

    def lr_at(self, step: int) -> float:
        return lr_factor(step, self.section.steps, self.section.warmup_steps, self.section.schedule)

    def train_step(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """uint8 batch to the device, resize and augment there, forward, cross-entropy, step."""
        rt = self.rt
        # ---- forward
        x = rt.memory_format(
            to_model_input(rt.to_device(batch["image"]), self.section.input_size, self.augment, generator)
        )
        target = rt.to_device(batch["label"])
        with rt.autocast():
            logits = self.net(x).float()
        loss = F.cross_entropy(logits, target, label_smoothing=self.section.label_smoothing)
        # ---- backward and step
        self.trainer.backward(loss)
        return {"train/loss": loss.detach(), "train/top1": (logits.argmax(1) == target).float().mean()}

    def count(self, split: ShardDataset) -> ClassCounts:
        """Counts of the model on a split, as the section evaluates (input size, mirror averaging)."""
        section = self.section
        return count_split(self.rt, self.model, split, section.input_size, section.batch_size, section.eval_flip)

    def load_selected(self) -> dict[str, Any]:
        """Load the weights `select` kept into the model; returns {step, metrics} of the selection."""
        self.model.load_state_dict(self.trainer.selected())
        return self.trainer.best or {"step": self.trainer.step, "metrics": {}}
