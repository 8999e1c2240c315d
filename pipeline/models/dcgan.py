"""DCGAN (Radford et al. 2016) as in pytorch/examples: a 64x64 generator and discriminator, and `dcgan.pt`."""

from __future__ import annotations

import copy
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.core.checkpoint import save_checkpoint
from pipeline.dataset.loader import to_uint8_images

IMAGE_SIZE = 64  # the architecture's output side: four stride-2 layers above a 4x4 seed
DCGAN_FORMAT = "img2caricature/dcgan-v1"


def dcgan_init(module: nn.Module) -> None:
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
        self.init_weights()

    def init_weights(self) -> None:
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z.reshape(z.shape[0], self.nz, 1, 1)  # (B, nz, 1, 1)
        return self.main(x)  # (B, ngf*8, 4, 4) -> (B, ngf*4, 8, 8) -> ... -> (B, 3, 64, 64)


class Discriminator(nn.Module):
    """An RGB image (B, 3, 64, 64) in [-1, 1] -> one logit per image (B,); train it with BCE with logits.

    Four 4x4 convs of stride 2 halve the side to 4 (LeakyReLU 0.2 after each, BatchNorm after all but the first),
    then a 4x4 conv without padding gives the 1x1 logit (the paper's Sigmoid is inside the loss).

    Args:
        ndf: channels of the first layer; the layers below have 2x, 4x, 8x (64 in the paper).
        spectral_norm: every conv's weight divided by its largest singular value (Miyato et al. 2018), in place of
            BatchNorm, as SN-GAN's D: D's Lipschitz bound then does what BatchNorm's batch statistics did.
    """

    def __init__(self, ndf: int = 64, spectral_norm: bool = False) -> None:
        super().__init__()
        self.ndf, self.spectral_norm = ndf, spectral_norm
        layers: list[nn.Module] = [nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        widths = [ndf, ndf * 2, ndf * 4, ndf * 8]
        for inp, out in pairwise(widths):
            norm = [] if spectral_norm else [nn.BatchNorm2d(out)]
            layers += [nn.Conv2d(inp, out, 4, 2, 1, bias=False), *norm, nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False))
        self.main = nn.Sequential(*layers)
        self.init_weights()
        if spectral_norm:  # after the init: the parametrization keeps the initialised weight as its original
            for index, layer in enumerate(self.main):
                if isinstance(layer, nn.Conv2d):
                    self.main[index] = nn.utils.parametrizations.spectral_norm(layer)

    def init_weights(self) -> None:
        self.apply(dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.main(x)  # (B, ndf, 32, 32) -> ... -> (B, ndf*8, 4, 4) -> (B, 1, 1, 1)
        return logits.flatten()  # (B,)


def fixed_noise(count: int, nz: int, seed: int) -> torch.Tensor:
    """The same noise vectors in every grid of a run (and of every run with this seed)."""
    return torch.randn(count, nz, generator=torch.Generator().manual_seed(seed))


def sample(gen: Generator, noise: torch.Tensor, batch_size: int) -> torch.Tensor:
    """uint8 faces (N, 64, 64, 3) of `noise`, generated in batches as in training (BatchNorm on batch statistics).

    A copy of G does the work, so sampling never moves the running statistics that the checkpoint holds.
    """
    sampler = copy.deepcopy(gen).train()
    device = next(gen.parameters()).device
    with torch.no_grad():
        return torch.cat([to_uint8_images(sampler(z.to(device))) for z in noise.split(batch_size)])


def save_dcgan(path: Path, gen: Generator, disc: Discriminator, info: dict[str, Any]) -> None:
    """Write dcgan.pt atomically: G's and D's weights and arguments, and `info` (params, run key, metrics)."""
    arch = {"nz": gen.nz, "ngf": gen.ngf, "ndf": disc.ndf, "spectral_norm": disc.spectral_norm}
    payload = {"generator": gen.state_dict(), "discriminator": disc.state_dict(), "arch": arch, **info}
    save_checkpoint(Path(path), payload, DCGAN_FORMAT)
