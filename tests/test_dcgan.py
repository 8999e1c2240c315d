"""DCGAN G and D: shapes, the paper's layers and init, finite outputs, a gradient for every parameter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.models.dcgan import Discriminator, Generator, to_uint8_images


@pytest.mark.parametrize(("nz", "width"), [(100, 8), (16, 4)])
def test_shapes_finite_outputs_and_a_gradient_for_every_parameter(nz: int, width: int) -> None:
    torch.manual_seed(0)
    gen, disc = Generator(nz, width), Discriminator(width)
    fake = gen(torch.randn(5, nz))
    assert fake.shape == (5, 3, 64, 64) and torch.isfinite(fake).all()
    assert fake.min() >= -1 and fake.max() <= 1  # Tanh output
    logits = disc(fake)
    assert logits.shape == (5,) and torch.isfinite(logits).all()
    (logits.square().sum() + disc(torch.rand(5, 3, 64, 64) * 2 - 1).sum()).backward()
    for name, parameter in [*gen.named_parameters(), *disc.named_parameters()]:
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0, name


def test_the_papers_layers_at_paper_width() -> None:
    gen, disc = Generator(100, 64), Discriminator(64)
    g_convs = [m for m in gen.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels) for m in g_convs] == [
        (100, 512),
        (512, 256),
        (256, 128),
        (128, 64),
        (64, 3),
    ]
    assert all(m.kernel_size == (4, 4) for m in g_convs) and [m.stride[0] for m in g_convs] == [1, 2, 2, 2, 2]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in gen.modules()) == 4 and isinstance(gen.main[-1], nn.Tanh)
    d_convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels) for m in d_convs] == [(3, 64), (64, 128), (128, 256), (256, 512), (512, 1)]
    assert [m.stride[0] for m in d_convs] == [2, 2, 2, 2, 1]
    # BatchNorm on every hidden layer but the first; LeakyReLU 0.2 everywhere
    assert (
        not isinstance(disc.main[1], nn.BatchNorm2d) and sum(isinstance(m, nn.BatchNorm2d) for m in disc.modules()) == 3
    )
    assert all(m.negative_slope == 0.2 for m in disc.modules() if isinstance(m, nn.LeakyReLU))
    # N(0, 0.02) conv weights, N(1, 0.02) BatchNorm scales
    weights = torch.cat([m.weight.detach().flatten() for m in g_convs + d_convs])
    assert abs(float(weights.mean())) < 0.001 and 0.019 < float(weights.std()) < 0.021
    scales = torch.cat([m.weight.detach() for m in gen.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(float(scales.mean()) - 1) < 0.005


def test_generator_output_becomes_uint8_images() -> None:
    x = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    images = to_uint8_images(x)
    assert images.dtype == torch.uint8 and images.shape == (2, 2, 2, 3)
    assert images[0, 0, 0].tolist() == [0, 128, 255]


def test_spectral_norm_d_has_no_batchnorm_and_unit_spectral_norms() -> None:
    torch.manual_seed(0)
    disc = Discriminator(8, spectral_norm=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in disc.modules())
    for _ in range(20):  # the power iteration converges over forward passes in training mode
        disc(torch.randn(4, 3, 64, 64))
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 5
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert 0.9 < float(sigma) < 1.1
    logits = disc(torch.randn(3, 3, 64, 64))
    logits.sum().backward()
    assert logits.shape == (3,) and all(p.grad is not None for p in disc.parameters())
