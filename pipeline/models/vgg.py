"""VGG-16-D: the seed's 13-conv stack in five max-pooled blocks and its FC head, narrowed by a width multiplier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# Configuration D of Simonyan & Zisserman (2015): output channels of each 3x3 conv, grouped by pooled block.
VGG16_D: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# The seed's hidden FC widths (its first FC took the 8192 = 512 x 4 x 4 features of a 128 x 128 input).
HEAD = (4096, 2048)


def scaled(channels: int, width: float) -> int:
    """A layer width times the multiplier, never below 1."""
    return max(1, round(channels * width))


def pooled_side(input_size: int, blocks: int = len(VGG16_D)) -> int:
    """Side of the feature map after `blocks` 2x2 max-pools (each floors: 152 -> 76 -> 38 -> 19 -> 9 -> 4)."""
    side = input_size
    for _ in range(blocks):
        side //= 2
    return side


def conv_stack(width: float = 1.0, batch_norm: bool = True, pool_last: bool = True) -> nn.Sequential:
    """The VGG-16-D conv blocks conv1..conv5: (3x3 conv, pad 1 [+ BatchNorm] + ReLU) x n, then a 2x2 max-pool.

    Args:
        width: multiplier of every block's channels (1.0 = 64 ... 512).
        batch_norm: BatchNorm after every conv (the conv then has no bias).
        pool_last: end conv5 with its pool; CAM's VGG-GAP stops at conv5-3 and passes False.

    Returns:
        a Sequential of five blocks (`features[i]` is block i + 1), each a Sequential of its layers.
    """
    blocks, channels = [], 3
    for index, block in enumerate(VGG16_D):
        layers: list[nn.Module] = []
        for out in block:
            out = scaled(out, width)
            layers.append(nn.Conv2d(channels, out, kernel_size=3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            channels = out
        if pool_last or index < len(VGG16_D) - 1:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        blocks.append(nn.Sequential(*layers))
    return nn.Sequential(*blocks)


class VGG(nn.Module):
    """VGG-16-D classifier: conv stack -> FC 4096 -> FC 2048 -> N, ReLU and dropout after each hidden FC.

    `embed` is the face-identity encoder f: the L2-normalised penultimate (FC 2048, after ReLU) activation.

    Args:
        num_classes: identities the head predicts.
        input_size: side of the square input (128 in the seed, 152 in the DTN paper); any side >= 32 works.
        width: multiplier of every conv and hidden FC width (1.0 = the paper's network).
        batch_norm: BatchNorm after every conv.
        dropout: drop probability after each hidden FC.
        hidden: the hidden FC widths before the multiplier.
    """

    def __init__(
        self,
        num_classes: int,
        input_size: int = 128,
        width: float = 1.0,
        batch_norm: bool = True,
        dropout: float = 0.5,
        hidden: tuple[int, int] = HEAD,
    ) -> None:
        super().__init__()
        if num_classes < 1 or input_size < 32 or width <= 0:
            raise ValueError(f"num_classes={num_classes} (>= 1), input_size={input_size} (>= 32), width={width} (> 0)")
        self.num_classes, self.input_size = num_classes, input_size
        self.features = conv_stack(width, batch_norm)
        side = pooled_side(input_size)
        self.feature_shape = (scaled(VGG16_D[-1][-1], width), side, side)
        first, second = (scaled(h, width) for h in hidden)
        self.embed_dim = second
        self.pre_logits = nn.Sequential(
            nn.Flatten(),  # (B, C * side * side)
            nn.Linear(self.feature_shape[0] * side * side, first),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(first, second),
            nn.ReLU(inplace=True),
        )
        self.head_drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(second, num_classes)
        self.init_weights()

    def init_weights(self) -> None:
        """He init for convs and hidden FCs (ReLU follows them); a small normal init for the logits."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if isinstance(module, nn.Conv2d | nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.classifier.weight, std=0.01)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] -> the pooled conv5 map (B, C, S // 32, S // 32)."""
        return self.features(x)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Conv5 map -> logits (B, N), or the penultimate activation (B, embed_dim) with `pre_logits`."""
        hidden = self.pre_logits(features)  # (B, embed_dim)
        return hidden if pre_logits else self.classifier(self.head_drop(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """f(x): the L2-normalised penultimate activation, (B, embed_dim); call in eval() for deterministic output."""
        return F.normalize(self.forward_head(self.forward_features(x), pre_logits=True), dim=1)

    def fold_batch_norm(self) -> VGG:
        """Fold every BatchNorm into the conv before it, in place, and return self in eval mode: for a frozen network.

        In eval mode BatchNorm is a per-channel affine map, so the folded conv computes the same function (to float
        rounding, about 1e-7 on f's unit-length embedding). On the CPU BatchNorm runs as a pass of its own, forward
        and backward: a frozen f that gradients flow through (the DTN's L_CONST) runs 1.6x faster folded. Training a
        folded network would not train it as a BatchNorm network, so fold only what stays frozen.
        """
        self.eval()
        for block in self.features:
            layers = list(block)
            for i, (layer, after) in enumerate(zip(layers, layers[1:], strict=False)):
                if isinstance(layer, nn.Conv2d) and isinstance(after, nn.BatchNorm2d):
                    block[i], block[i + 1] = fuse_conv_bn_eval(layer, after), nn.Identity()
        return self
