"""DCGAN (Radford et al. 2016) as in pytorch/examples: a 64x64 generator and discriminator, widths as arguments."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

IMAGE_SIZE = 64  # the architecture's output side: four stride-2 layers above a 4x4 seed


def init_dcgan_weights(module: nn.Module) -> None:
    """The paper's init: every conv weight from N(0, 0.02), BatchNorm scales from N(1, 0.02), biases 0."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:  # the DCGAN's own convs have none; the DTN's D has one on its first
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """z (B, nz) -> an RGB image (B, 3, 64, 64) in [-1, 1].

    A 4x4 transposed conv (stride 1) lifts z to a 4x4 map; four 4x4 transposed convs of stride 2 double the side
    to 64. BatchNorm and ReLU after every layer but the last, which ends in Tanh. No biases: BatchNorm follows.

    Args:
        nz: length of the noise vector (100 in the paper).
        ngf: channels of the last hidden layer; the layers above have 2x, 4x, 8x (64 in the paper).
    """

    def __init__(self, nz: int = 100, ngf: int = 64) -> None:
        super().__init__()
        self.nz, self.ngf = nz, ngf
        layers: list[nn.Module] = []
        widths = [nz, ngf * 8, ngf * 4, ngf * 2, ngf]
        for index, (inp, out) in enumerate(pairwise(widths)):
            stride, padding = (1, 0) if index == 0 else (2, 1)
            layers += [nn.ConvTranspose2d(inp, out, 4, stride, padding, bias=False), nn.BatchNorm2d(out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.apply(init_dcgan_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z.reshape(z.shape[0], self.nz, 1, 1)  # (B, nz, 1, 1)
        return self.main(x)  # (B, ngf*8, 4, 4) -> (B, ngf*4, 8, 8) -> ... -> (B, 3, 64, 64)


class Discriminator(nn.Module):
    """An RGB image (B, 3, 64, 64) in [-1, 1] -> one logit per image (B,); train it with BCE with logits.

    Four 4x4 convs of stride 2 halve the side to 4 (LeakyReLU 0.2 after each, BatchNorm after all but the first),
    then a 4x4 conv without padding gives the 1x1 logit (the paper's Sigmoid is inside the loss).

    Args:
        ndf: channels of the first layer; the layers below have 2x, 4x, 8x (64 in the paper).
    """

    def __init__(self, ndf: int = 64) -> None:
        super().__init__()
        self.ndf = ndf
        layers: list[nn.Module] = [nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        widths = [ndf, ndf * 2, ndf * 4, ndf * 8]
        for inp, out in pairwise(widths):
            layers += [nn.Conv2d(inp, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False))
        self.main = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.apply(init_dcgan_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.main(x)  # (B, ndf, 32, 32) -> ... -> (B, ndf*8, 4, 4) -> (B, 1, 1, 1)
        return logits.flatten()  # (B,)


def to_uint8_images(x: torch.Tensor) -> torch.Tensor:
    """Generator output (B, 3, S, S) in [-1, 1] -> uint8 (B, S, S, 3), as an image file would store it."""
    return ((x.detach().float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()
