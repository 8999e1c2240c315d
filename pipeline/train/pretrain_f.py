"""`pretrain_f`: train the VGG identity classifier on the face shards, select on val, test, and save f."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.params import PretrainFParams, resolved
from pipeline.core.reuse import code_version
from pipeline.core.runner import StageError
from pipeline.core.viz import image_grid
from pipeline.dataset.loader import Augment, ShardDataset, to_model_input, to_uint8_images
from pipeline.dataset.randomize import Randomize, randomize_avatars
from pipeline.evaluate.classify import ClassCounts, chance_topk, majority_share
from pipeline.models.avatar_params import AvatarParamsNet, class_targets
from pipeline.models.face_encoder import save_f
from pipeline.models.multitask import TwoDomainNet
from pipeline.models.vgg import VGG
from pipeline.train.checkpoint import RunKey, loop_params
from pipeline.train.classifier import ClassifierStage, FaceData, read_faces
from pipeline.train.skeleton import Networks

# Keys of the section that never change the trained weights: where things go and how often they are logged.
NOT_SHAPING = ("log_every", "checkpoint_every", "model", "metrics", "details", "run_log", "live_dir", "checkpoint_dir")
CONFUSION_FILE = "confusion.json"


class PretrainF(ClassifierStage):
    """VGG-16-D on `<pack.out_dir>/faces`: trained on train, selected on val, tested on test; f is its penultimate
    layer, saved with the label map in f.pt. With `avatars.weight` (or `avatars.domain_confusion`) it also learns
    the parameters of the train avatars from the same layer, in the same steps."""

    name = section_name = loop_name = "pretrain_f"
    avatars: ShardDataset | None = None

    def read_data(self) -> ShardDataset:
        root = Path(self.params.pack.out_dir)
        self.data = read_faces(root / "faces")
        task = self.section.avatars
        if task.weight > 0 or task.domain_confusion > 0:
            self.avatars = ShardDataset(root / "avatars", "train")
            if len(self.avatars) == 0:
                raise StageError(
                    f"the avatar train split under {root} is empty; raise crawl.avatars.count or set "
                    "pretrain_f.avatars.weight and domain_confusion to 0"
                )
            self.avatar_images = self.avatars.gather(np.arange(len(self.avatars)))["image"]
        return self.data.train

    def build(self) -> Networks:
        model, self.arch = build_vgg(self.section, len(self.data.labels))
        if self.avatars is None:
            return self.networks(model, self.rt.prepare(model))
        task = self.section.avatars
        self.heads = AvatarParamsNet(model.embed_dim, hidden=0, dropout=0.0)
        both = TwoDomainNet(model, self.heads, task.domain_hidden if task.domain_confusion > 0 else 0)
        extra = {"avatar_heads": self.heads} | ({"domain": both.domain} if both.domain is not None else {})
        self.avatar_targets = class_targets(self.avatars.index, self.heads.vocab)
        self.randomize = Randomize() if task.randomize else None
        return self.networks(model, self.rt.prepare(both), extra)

    def run_key(self) -> RunKey:
        data_id = self.data.data_id
        if self.avatars is not None:
            data_id += "+avatars:" + self.avatars.index["shard_sha256"].drop_duplicates().str[:12].str.cat()
        return run_key(self.section, data_id)

    def before_fit(self) -> None:
        if not self.rt.is_main:
            return
        grid = sample_grid(self.data.train, self.data.labels, 32, self.section.input_size, self.augment)
        self.trainer.live.image("train_augmented.png", grid, step=self.trainer.step)
        if self.avatars is not None:
            generator = torch.Generator().manual_seed(0)
            x = self.avatar_input(torch.arange(min(32, len(self.avatar_images))), generator)
            grid = image_grid(list(to_uint8_images(x).numpy()), cols=8)
            self.trainer.live.image("train_avatars.png", grid, step=self.trainer.step)

    def avatar_input(self, pick: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Avatars as the network trains on them: photo-like when randomised, else the photos' augmentation."""
        size = self.section.input_size
        images = self.rt.to_device(self.avatar_images[pick])
        if self.randomize is None:
            return to_model_input(images, size, self.augment, generator)
        return randomize_avatars(to_model_input(images, size).add(1).div(2), self.randomize, generator).mul(2).sub(1)

    def train_step(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Identity on the photos; with avatars, their parameters (and the domain classifier) in the same pass."""
        if self.avatars is None:
            return super().train_step(batch, generator)
        rt, section, task = self.rt, self.section, self.section.avatars
        # ---- forward: a batch of photos and a batch of random train avatars
        photos = to_model_input(rt.to_device(batch["image"]), section.input_size, self.augment, generator)
        pick = torch.randint(len(self.avatar_images), (task.batch_size,), generator=generator)
        avatars = self.avatar_input(pick, generator)
        reverse = task.domain_confusion * dann_ramp(self.trainer.step / section.steps)
        with rt.autocast():
            logits, avatar_logits, domain = self.net(rt.memory_format(photos), rt.memory_format(avatars), reverse)
        target = rt.to_device(batch["label"])
        identity = F.cross_entropy(logits.float(), target, label_smoothing=section.label_smoothing)
        targets = {key: rt.to_device(values[pick]) for key, values in self.avatar_targets.items()}
        avatar = self.heads.loss({key: value.float() for key, value in avatar_logits.items()}, targets)
        loss = identity + task.weight * avatar
        out = {"train/loss": identity.detach(), "train/top1": (logits.argmax(1) == target).float().mean()}
        out["train/avatar_loss"] = avatar.detach()
        if domain is not None:
            is_avatar = torch.cat([torch.zeros(len(photos)), torch.ones(len(avatars))]).to(domain.device)
            confusion = F.binary_cross_entropy_with_logits(domain.float(), is_avatar)
            loss = loss + confusion
            out["train/domain_loss"] = confusion.detach()
        # ---- backward and step
        self.trainer.backward(loss)
        return out

    def evaluate(self) -> dict[str, float]:
        if not len(self.data.val):
            return {}
        counts = self.count(self.data.val)
        return {"val/top1": counts.topk(1), "val/top5": counts.topk(5), "val/loss": counts.loss()}

    def finish(self) -> tuple[dict[str, Any], dict[str, Any]]:
        best = self.load_selected()
        self.test = self.count(self.data.test)
        step, val = int(best["step"]), best["metrics"]
        return flat_metrics(self.test, self.data), details(self.test, val, self.data, step)

    def save(self, metrics: dict[str, Any]) -> None:
        """f.pt, the test confusion plot and the test prediction grid."""
        section, labels = self.section, self.data.labels
        info = {
            "params": resolved(section),
            "align": resolved(self.params.align),
            "run": self.trainer.key.record(),
            "metrics": metrics,
        }
        save_f(Path(section.model), self.model.state_dict(), self.arch, labels, info)
        actual, predicted = self.test.pairs()
        self.trainer.live.confusion(CONFUSION_FILE, [labels[i] for i in actual], [labels[i] for i in predicted])
        grid = prediction_grid(self.model, self.data.test, labels, section.input_size)
        self.trainer.live.image("test_predictions.png", grid)

    def summary(self, metrics: dict[str, Any], details: dict[str, Any]) -> str:
        data = details["data"]
        return (
            f"pretrain_f: test top-1 {metrics['test_top1']:.3f} (chance {metrics['chance_top1']:.3f}), top-5 "
            f"{metrics['test_top5']:.3f} (chance {metrics['chance_top5']:.3f}) on {data['test_images']} photos "
            f"of {data['identities']} identities, weights of step {details['selected']['step']}"
        )


def dann_ramp(progress: float) -> float:
    """DANN's schedule of the reversal weight (Ganin & Lempitsky 2015): 0 at the start, towards 1 at the end."""
    return 2 / (1 + math.exp(-10 * progress)) - 1


def run_key(section: PretrainFParams, data_id: str) -> RunKey:
    """What f's weights depend on: the shaping params (threads left out), the code version and the data."""
    return RunKey(loop_params(resolved(section), NOT_SHAPING), code_version("pipeline.train.pretrain_f"), data_id)


def build_vgg(section: PretrainFParams, num_classes: int) -> tuple[VGG, dict[str, Any]]:
    """The VGG of the section and its constructor arguments (saved in f.pt)."""
    arch = {
        "num_classes": num_classes,
        "input_size": section.input_size,
        "width": section.width,
        "batch_norm": section.batch_norm,
        "dropout": section.dropout,
    }
    return VGG(**arch), arch


def sample_grid(data: ShardDataset, labels: list[str], count: int, size: int, augment: Augment | None) -> np.ndarray:
    """The first `count` faces of a split as the model sees them (augmented when `augment` is given)."""
    batch = data.gather(np.arange(min(count, len(data))))
    x = to_model_input(batch["image"], size, augment, torch.Generator().manual_seed(0))
    names = [labels[i][:14] for i in batch["label"].tolist()]
    return image_grid(list(to_uint8_images(x).numpy()), cols=8, labels=names)


@torch.no_grad()
def prediction_grid(model: VGG, data: ShardDataset, labels: list[str], size: int, count: int = 32) -> np.ndarray:
    """Test faces labelled `true > predicted` (wrong ones first), to see what f confuses."""
    batch = data.gather(np.arange(len(data)))
    model.eval()
    device = next(model.parameters()).device
    predicted = model(to_model_input(batch["image"].to(device), size)).argmax(1).cpu()
    wrong = (predicted != batch["label"]).numpy()
    order = np.argsort(~wrong, kind="stable")[:count]
    names = [f"{labels[t][:10]}>{labels[p][:10]}" for t, p in zip(batch["label"][order], predicted[order], strict=True)]
    return image_grid(list(batch["image"][order].numpy()), cols=8, labels=names)


def details(test: ClassCounts, val: dict[str, float], data: FaceData, best_step: int) -> dict[str, Any]:
    """The breakdown beside the metrics: the data's counts, the majority share, the selected step and its val numbers,
    test accuracy and top confusion per identity."""
    labels = data.labels
    per_identity = {}
    for i, (correct, total) in enumerate(test.per_class()):
        row = test.confusion[i].clone()
        row[i] = 0
        confused = labels[int(row.argmax())] if int(row.max()) > 0 else None
        accuracy = round(correct / total, 4) if total else None
        per_identity[labels[i]] = {"accuracy": accuracy, "test_images": total, "most_confused_with": confused}
    return {
        "data": {"identities": len(labels), "train_images": len(data.train), "test_images": test.total},
        "majority_top1": round(majority_share([total for _, total in test.per_class()]), 4),
        "selected": {"step": best_step, **{k.replace("/", "_"): round(v, 4) for k, v in val.items()}},
        "test_loss": round(test.loss(), 4),
        "per_identity": per_identity,
    }


def flat_metrics(test: ClassCounts, data: FaceData) -> dict[str, Any]:
    """The numbers of metrics/pretrain_f.json: test accuracy with chance beside it."""
    n = len(data.labels)
    return {
        "test_top1": round(test.topk(1), 4),
        "chance_top1": round(chance_topk(1, n), 4),
        "test_top5": round(test.topk(5), 4),
        "chance_top5": round(chance_topk(5, n), 4),
    }
