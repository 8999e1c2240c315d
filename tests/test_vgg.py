"""VGG-16-D: shapes for every input size, no NaN, a gradient for every parameter, the paper's layer sizes."""

from __future__ import annotations

import pytest
import torch

from pipeline.models.vgg import VGG, conv_stack


@pytest.mark.parametrize(("input_size", "batch_norm"), [(64, True), (128, False), (152, True)])
def test_shapes_finite_outputs_and_a_gradient_for_every_parameter(input_size: int, batch_norm: bool) -> None:
    torch.manual_seed(0)
    model = VGG(num_classes=7, input_size=input_size, width=0.125, batch_norm=batch_norm)
    x = torch.randn(3, 3, input_size, input_size)
    features = model.forward_features(x)
    assert features.shape == (3, 64, input_size // 32, input_size // 32) == (3, *model.feature_shape)
    logits = model.forward_head(features)
    penultimate = model.forward_head(features, pre_logits=True)
    assert logits.shape == (3, 7) and penultimate.shape == (3, model.embed_dim) == (3, 256)
    assert torch.isfinite(logits).all() and torch.isfinite(penultimate).all()
    (logits.square().sum() + model.embed(x).sum()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_embed_is_the_unit_length_penultimate_activation_and_deterministic_in_eval() -> None:
    torch.manual_seed(0)
    model = VGG(num_classes=4, input_size=64, width=0.125).eval()
    x = torch.randn(5, 3, 64, 64)
    f = model.embed(x)
    assert torch.allclose(f.norm(dim=1), torch.ones(5), atol=1e-5)
    penultimate = model.forward_head(model.forward_features(x), pre_logits=True)
    assert torch.allclose(f, penultimate / penultimate.norm(dim=1, keepdim=True), atol=1e-6)
    assert torch.equal(model.embed(x), f)  # eval(): dropout off, BatchNorm running statistics


def test_full_width_has_the_paper_layer_sizes() -> None:
    # VGG-16's 13 convs hold 14,714,688 weights and biases; the seed's first FC takes 512 x 4 x 4 = 8192 features.
    model = VGG(num_classes=60, input_size=128, width=1.0, batch_norm=False)
    convs = [m for m in model.features.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert sum(p.numel() for c in convs for p in c.parameters()) == 14_714_688
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(fc.in_features, fc.out_features) for fc in linears] == [(8192, 4096), (4096, 2048), (2048, 60)]
    pools = [m for m in model.features.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == 5 and VGG(2, input_size=152, width=1.0).feature_shape == (512, 4, 4)


def test_conv_stack_without_the_last_pool_keeps_conv5_resolution() -> None:
    stack = conv_stack(width=0.125, batch_norm=False, pool_last=False)
    assert stack(torch.zeros(1, 3, 128, 128)).shape == (1, 64, 8, 8)  # CAM's conv5-3 map


def test_dropout_is_active_in_train_mode_only() -> None:
    torch.manual_seed(0)
    model = VGG(num_classes=3, input_size=64, width=0.125, dropout=0.5)
    x = torch.randn(2, 3, 64, 64)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="input_size=16"):
        VGG(num_classes=3, input_size=16)


def test_folded_batch_norm_computes_the_same_f_and_input_gradient() -> None:
    """A frozen f with its BatchNorms folded into the convs: the same embedding and the same gradient to its input
    (what L_CONST sends back into g), and no BatchNorm left to run."""
    torch.manual_seed(0)
    net = VGG(num_classes=5, input_size=64, width=0.125)
    net.train()
    with torch.no_grad():  # a few batches move the running statistics away from (0, 1)
        for _ in range(3):
            net(torch.randn(8, 3, 64, 64) * 2 + 0.5)
    net.eval()
    x = torch.randn(4, 3, 64, 64, requires_grad=True)
    expected = net.embed(x)
    (expected_grad,) = torch.autograd.grad(expected[:, 0].sum(), x)
    folded = net.fold_batch_norm().requires_grad_(False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    got = folded.embed(x)
    (got_grad,) = torch.autograd.grad(got[:, 0].sum(), x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got_grad, expected_grad, atol=1e-5, rtol=1e-3)
    assert not folded.training
