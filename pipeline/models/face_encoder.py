"""f as a file: `models/f.pt` holds the VGG weights and arguments, the label map and how its inputs were made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.dataset.loader import to_model_input
from pipeline.models.vgg import VGG
from pipeline.core.checkpoint import load_checkpoint, save_checkpoint

F_FORMAT = "img2caricature/f-v1"
ARCH_KEYS = ("num_classes", "input_size", "width", "batch_norm", "dropout")


class FaceEncoder(nn.Module):
    """The trained identity classifier with its labels: aligned uint8 faces in, identity logits or f out.

    Args:
        net: the VGG classifier.
        labels: identity name of each class index.
        info: what else f.pt recorded (resolved params, align params, metrics, run key).
    """

    def __init__(self, net: VGG, labels: list[str], info: dict[str, Any] | None = None) -> None:
        super().__init__()
        if len(labels) != net.num_classes:
            raise ValueError(f"{len(labels)} labels for a head of {net.num_classes} classes")
        self.net, self.labels, self.info = net, list(labels), dict(info or {})

    @property
    def input_size(self) -> int:
        return self.net.input_size

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) aligned faces -> the float (B, 3, S, S) input in [-1, 1] that f was trained on."""
        device = next(self.net.parameters()).device
        return to_model_input(images.to(device), self.input_size)

    @property
    def eval_flip(self) -> bool:
        """Whether f was evaluated on the mean logits of a face and its mirror image (params `eval_flip`)."""
        return bool(self.info.get("params", {}).get("eval_flip", False))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N) identity logits of uint8 aligned faces, mirror-averaged when f was evaluated that way."""
        x = self.prepare(images)
        logits = self.net(x)
        return (logits + self.net(x.flip(3))) / 2 if self.eval_flip else logits

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N) softmax over the identities."""
        return F.softmax(self.logits(images).float(), dim=1)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """f: (B, D) L2-normalised penultimate activations of uint8 aligned faces."""
        return self.net.embed(self.prepare(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)


def save_f(path: Path, state: dict[str, torch.Tensor], arch: dict[str, Any], labels: list[str], info: dict) -> None:
    """Write f.pt atomically: weights, VGG arguments, labels and `info` (params, align params, metrics, run key)."""
    missing = [key for key in ARCH_KEYS if key not in arch]
    if missing:
        raise ValueError(f"arch lacks {missing}")
    save_checkpoint(Path(path), {"state": state, "arch": dict(arch), "labels": list(labels), "info": info}, F_FORMAT)


def load_f(path: Path, device: str | torch.device = "cpu") -> FaceEncoder:
    """The FaceEncoder saved in f.pt, in eval mode on `device` (a weights-only load).

    Raises:
        FileNotFoundError: when there is no file (train it with `dvc repro pretrain_f`).
        pipeline.core.checkpoint.CheckpointError: when the file is corrupt or not an f.pt.
    """
    payload = load_checkpoint(path, F_FORMAT, missing="train f first with `dvc repro pretrain_f`")
    net = VGG(**{key: payload["arch"][key] for key in ARCH_KEYS})
    net.load_state_dict(payload["state"])
    return FaceEncoder(net, payload["labels"], payload["info"]).to(device).eval()
