"""CAM's classifiers: VGG-GAP (Zhou et al. 2016) with its class activation map, and the VGG-ORG FC head it beat."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.vgg import VGG, VGG16_D, conv_stack, scaled
from pipeline.core.checkpoint import load_checkpoint, save_checkpoint

CAM_FORMAT = "img2caricature/cam-v2"
ARCH_KEYS = ("head", "num_classes", "input_size", "width", "batch_norm", "cam_channels", "dropout", "map_stride")
MAP_STRIDES = (8, 16)
HEADS = ("gap", "fc")


class VGGGAP(nn.Module):
    """VGG-GAP: VGG-16-D's conv1..conv5-3 without pool5, a 3x3 conv, global average pooling and a linear softmax.

    Its class activation map M_c(x, y) = sum_k w_k^c f_k(x, y) is the linear layer applied at every position of
    the last conv's map, so the logit of class c is exactly the mean of M_c.

    Args:
        num_classes: identities the head predicts.
        input_size: side of the square input (the map is input_size // map_stride on a side).
        width: multiplier of every conv width (1.0 = the paper's 64 ... 512 and 1024 channels).
        batch_norm: BatchNorm after every conv, the added one included.
        cam_channels: channels of the added 3x3 conv before the multiplier (the paper's 1024).
        map_stride: input pixels per map cell. 16: the paper's (four pools before conv5); 8: pool4 is dropped as in
            Choe et al. 2020's `large_feature_map`, so conv5 and the map are twice as fine (4x the positions).
    """

    def __init__(
        self,
        num_classes: int,
        input_size: int = 128,
        width: float = 1.0,
        batch_norm: bool = True,
        cam_channels: int = 1024,
        map_stride: int = 16,
    ) -> None:
        super().__init__()
        if num_classes < 1 or input_size < 32 or width <= 0 or cam_channels < 1 or map_stride not in MAP_STRIDES:
            raise ValueError(
                f"num_classes={num_classes} (>= 1), input_size={input_size} (>= 32), width={width} (> 0), "
                f"cam_channels={cam_channels} (>= 1), map_stride={map_stride} (one of {MAP_STRIDES})"
            )
        self.num_classes, self.input_size, self.map_stride = num_classes, input_size, map_stride
        self.features = conv_stack(width, batch_norm, pool_last=False)  # the same layer names as VGG's: f loads
        if map_stride == 8:
            self.features[3][-1] = nn.Identity()  # pool4 (parameter-free: f's conv weights still load by name)
        channels, self.cam_dim = scaled(VGG16_D[-1][-1], width), scaled(cam_channels, width)
        layers: list[nn.Module] = [nn.Conv2d(channels, self.cam_dim, kernel_size=3, padding=1, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(self.cam_dim))
        self.cam_conv = nn.Sequential(*layers, nn.ReLU(inplace=True))
        self.classifier = nn.Linear(self.cam_dim, num_classes)
        self.init_weights()

    def init_weights(self) -> None:
        """He init for the convs (ReLU follows them), BatchNorm at identity, a small normal init for the logits."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Conv2d | nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.classifier.weight, std=0.01)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] -> the added conv's map f_k, (B, K, S // map_stride, S // map_stride)."""
        return self.cam_conv(self.features(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """f_k -> logits (B, N): global average pooling, then the linear layer."""
        return self.classifier(features.mean(dim=(2, 3)))  # (B, K) -> (B, N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def class_map(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """M_c = sum_k w_k^c f_k for one class per sample: f_k (B, K, h, w), classes (B,) -> (B, h, w).

        The bias is left out: it shifts every position equally, and the box is found on the min-max scaled map.
        """
        weights = self.classifier.weight[classes].to(features.dtype)  # (B, K)
        return torch.einsum("bkhw,bk->bhw", features, weights)


def build_cam_model(
    head: str,
    num_classes: int,
    input_size: int,
    width: float,
    batch_norm: bool,
    cam_channels: int = 1024,
    dropout: float = 0.5,
    map_stride: int = 16,
) -> nn.Module:
    """VGG-GAP for head `gap` (its map at 1/map_stride of the input); for `fc`, VGG-ORG: the same conv stack with
    pool5 and the FC 4096 -> 2048 head (map_stride does not apply: its occlusion map has its own grid)."""
    if head == "gap":
        return VGGGAP(num_classes, input_size, width, batch_norm, cam_channels, map_stride)
    if head == "fc":
        return VGG(num_classes, input_size, width, batch_norm, dropout)
    raise ValueError(f"head={head!r}: use one of {HEADS}")


class Tail(nn.Module):
    """The trained rest of a CAM model whose first `start` conv blocks stay as f made them: their output -> logits."""

    def __init__(self, model: nn.Module, start: int) -> None:
        super().__init__()
        self.model, self.start = model, start

    def forward(self, frozen_out: torch.Tensor) -> torch.Tensor:
        x = self.model.features[self.start :](frozen_out)
        if isinstance(self.model, VGGGAP):
            return self.model.forward_head(self.model.cam_conv(x))
        return self.model.forward_head(x)


def freeze(model: nn.Module, blocks: int) -> nn.Sequential:
    """Stop the gradients of the first `blocks` conv blocks; returns them (run them in eval mode: f's BatchNorm)."""
    frozen = model.features[:blocks]
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
    return frozen


def min_max(maps: torch.Tensor) -> torch.Tensor:
    """Each (H, W) map of a (B, H, W) batch shifted to min 0 and scaled to max 1 (a flat map becomes all 0)."""
    low = maps.flatten(1).min(dim=1).values.view(-1, 1, 1)
    high = maps.flatten(1).max(dim=1).values.view(-1, 1, 1)
    return (maps - low) / (high - low).clamp_min(1e-12)


@torch.no_grad()
def occlusion_map(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, patch: int, stride: int) -> torch.Tensor:
    """How much the probability of `classes` drops when a patch of the input is greyed out (Zeiler & Fergus 2014).

    The FC head has no class activation map; this map needs no gradients and works for any classifier, so both
    heads are boxed by the same rule. Cost: one forward pass per patch position and image.

    Args:
        x: (B, 3, S, S) in [-1, 1]; patches are set to 0 (mid grey).
        classes: (B,) the class whose probability is watched.
        patch / stride: side and step of the square patch, in input pixels.

    Returns:
        (B, n, n) probability drops, n = (S - patch) // stride + 1.
    """
    side = x.shape[-1]
    starts = list(range(0, side - patch + 1, stride))
    base = F.softmax(model(x).float(), dim=1).gather(1, classes[:, None])  # (B, 1)
    drops = torch.zeros(x.shape[0], len(starts), len(starts))
    for i, top in enumerate(starts):
        occluded = x.unsqueeze(1).repeat(1, len(starts), 1, 1, 1)  # (B, n, 3, S, S): one row of positions at once
        for j, left in enumerate(starts):
            occluded[:, j, :, top : top + patch, left : left + patch] = 0
        logits = model(occluded.flatten(0, 1)).float().view(x.shape[0], len(starts), -1)  # (B, n, N)
        probability = F.softmax(logits, dim=2).gather(2, classes.view(-1, 1, 1).expand(-1, len(starts), 1))
        drops[:, i] = (base - probability.squeeze(2)).cpu()  # (B, n)
    return drops


@torch.no_grad()
def heat_maps(
    model: nn.Module, x: torch.Tensor, size: int, occlusion: tuple[int, int] = (32, 16), flip: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the min-max scaled map of the predicted class, upsampled to size x size.

    VGG-GAP gives its class activation map; any other classifier (the FC head) its occlusion map.

    Args:
        x: (B, 3, S, S) model input in [-1, 1].
        size: side of the returned maps (the photo's side, so boxes come out in its pixels).
        occlusion: (patch, stride) of the occlusion map.
        flip: also run the mirror image: the logits are the mean of both, and the map of their predicted class is
            the mean of the photo's map and the mirror image's map mirrored back.

    Returns:
        logits (B, N) and maps (B, size, size) in [0, 1], both float32 on the CPU.
    """
    views = [x, x.flip(3)] if flip else [x]
    if isinstance(model, VGGGAP):
        features = [model.forward_features(view) for view in views]
        logits = torch.stack([model.forward_head(f).float() for f in features]).mean(0)
        maps = [model.class_map(f, logits.argmax(1)).float() for f in features]  # (B, h, w) each
    else:
        logits = torch.stack([model(view).float() for view in views]).mean(0)
        maps = [occlusion_map(model, view, logits.argmax(1), *occlusion).to(x.device) for view in views]  # (B, n, n)
    # each view's map back in the photo's orientation (pools of even sides mirror exactly), then their mean
    mean = torch.stack([m.flip(2) if i else m for i, m in enumerate(maps)]).mean(0)
    # upsampled as the paper does (bilinear), then scaled per map so that its threshold is a share of the peak
    mean = F.interpolate(mean[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]  # (B, S, S)
    return logits.cpu(), min_max(mean).cpu()


class CamClassifier(nn.Module):
    """A trained CAM model with its labels and how it was made (cam.pt).

    Args:
        net: VGGGAP (head gap) or VGG (head fc).
        arch: the constructor arguments (ARCH_KEYS).
        labels: identity name of each class index.
        info: resolved params, the run key, the metrics.
    """

    def __init__(self, net: nn.Module, arch: dict[str, Any], labels: list[str], info: dict | None = None) -> None:
        super().__init__()
        if len(labels) != net.num_classes:
            raise ValueError(f"{len(labels)} labels for a head of {net.num_classes} classes")
        self.net, self.arch, self.labels, self.info = net, dict(arch), list(labels), dict(info or {})

    @property
    def input_size(self) -> int:
        return int(self.arch["input_size"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def save_cam(path: Path, state: dict[str, torch.Tensor], arch: dict[str, Any], labels: list[str], info: dict) -> None:
    """Write cam.pt atomically: weights, constructor arguments, labels and `info`."""
    missing = [key for key in ARCH_KEYS if key not in arch]
    if missing:
        raise ValueError(f"arch lacks {missing}")
    save_checkpoint(Path(path), {"state": state, "arch": dict(arch), "labels": list(labels), "info": info}, CAM_FORMAT)


def load_cam(path: Path, device: str | torch.device = "cpu") -> CamClassifier:
    """The CamClassifier saved in cam.pt, in eval mode on `device` (a weights-only load).

    Raises:
        FileNotFoundError: when there is no file (train it with `dvc repro train_cam`).
        pipeline.core.checkpoint.CheckpointError: when the file is corrupt or not a cam.pt.
    """
    payload = load_checkpoint(path, CAM_FORMAT, missing="train the CAM model first with `dvc repro train_cam`")
    net = build_cam_model(**{key: payload["arch"][key] for key in ARCH_KEYS})
    net.load_state_dict(payload["state"])
    return CamClassifier(net, payload["arch"], payload["labels"], payload["info"]).to(device).eval()
