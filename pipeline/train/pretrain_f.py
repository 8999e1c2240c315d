"""`pretrain_f`: train the VGG identity classifier on the face shards, select on val, test, and save f."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.params import PretrainFParams, resolved
from pipeline.core.reuse import code_version, shaping_params
from pipeline.core.viz import image_grid
from pipeline.dataset.loader import Augment, ShardDataset, to_model_input, to_uint8_images
from pipeline.evaluate.classify import ClassCounts, chance_topk, majority_share
from pipeline.models.face_encoder import save_f
from pipeline.models.vgg import VGG
from pipeline.train.checkpoint import RunKey
from pipeline.train.classifier import ClassifierStage, FaceData, read_faces
from pipeline.train.skeleton import Networks

# Keys of the section that never change the trained weights: where things go and how often they are logged.
NOT_SHAPING = ("log_every", "checkpoint_every", "model", "metrics", "details", "run_log", "live_dir", "checkpoint_dir")
CONFUSION_FILE = "confusion.json"


class PretrainF(ClassifierStage):
    """VGG-16-D on `<pack.out_dir>/faces`: trained on train, selected on val, tested on test; f is its penultimate
    layer, saved with the label map in f.pt."""

    name = section_name = loop_name = "pretrain_f"

    def read_data(self) -> ShardDataset:
        self.data = read_faces(Path(self.params.pack.out_dir) / "faces")
        return self.data.train

    def build(self) -> Networks:
        model, self.arch = build_vgg(self.section, len(self.data.labels))
        return self.networks(model, self.rt.prepare(model))

    def run_key(self) -> RunKey:
        return run_key(self.section, self.data.data_id)

    def before_fit(self) -> None:
        if self.rt.is_main:
            grid = sample_grid(self.data.train, self.data.labels, 32, self.section.input_size, self.augment)
            self.trainer.live.image("train_augmented.png", grid, step=self.trainer.step)

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


def run_key(section: PretrainFParams, data_id: str) -> RunKey:
    """What f's weights depend on: the shaping params (threads left out), the code version and the data."""
    params = shaping_params(resolved(section), NOT_SHAPING)
    params["runtime"] = {k: v for k, v in params["runtime"].items() if k != "threads"}
    return RunKey(params, code_version("pipeline.train.pretrain_f"), data_id)


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
