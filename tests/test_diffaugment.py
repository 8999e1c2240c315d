"""DiffAugment: differentiable, one draw per image shared by its channels, reproducible, and a no-op when off."""

from __future__ import annotations

import pytest
import torch

from pipeline.models.diffaugment import POLICIES, color, cutout, diff_augment, translation


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_every_policy_passes_gradients_to_every_pixel_it_keeps() -> None:
    x = (torch.rand(6, 3, 16, 16) * 2 - 1).requires_grad_()
    y = diff_augment(x, POLICIES, seeded())
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # a generated image's gradient reaches G through every transform: no pixel is detached from x
    z = (torch.rand(2, 3, 8, 8) * 2 - 1).requires_grad_()
    color(z, seeded()).sum().backward()
    assert (z.grad != 0).all()


def test_the_same_generator_state_gives_the_same_batch_and_another_a_different_one() -> None:
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    assert torch.equal(diff_augment(x, POLICIES, seeded(1)), diff_augment(x, POLICIES, seeded(1)))
    assert not torch.equal(diff_augment(x, POLICIES, seeded(1)), diff_augment(x, POLICIES, seeded(2)))


@pytest.mark.parametrize("transform", [color, translation, cutout])
def test_one_draw_per_image_is_shared_by_its_channels(transform) -> None:
    grey = (torch.rand(5, 1, 16, 16) * 2 - 1).expand(5, 3, 16, 16).contiguous()  # equal channels
    y = transform(grey, seeded(3))
    assert torch.allclose(y[:, 0], y[:, 1]) and torch.allclose(y[:, 0], y[:, 2])
    # ... and images of one batch get their own draws
    same = grey[:1].expand(5, 3, 16, 16).contiguous()
    out = transform(same, seeded(3))
    assert any(not torch.equal(out[0], out[i]) for i in range(1, 5))


def test_translation_moves_whole_pixels_and_fills_with_grey() -> None:
    image = torch.arange(1.0, 65.0).view(1, 1, 8, 8).expand(32, 3, 8, 8)
    moved = translation(image, seeded(4), ratio=0.25)  # shifts of -2 .. 2 pixels each way
    for out in moved[:, 0]:
        kept = out[out != 0]
        assert len(kept) >= 36  # at most 2 rows and 2 columns leave the frame
        # every kept value sits where a shift of the input puts it: find the shift from the first kept value
        first = int(torch.nonzero(out)[0][0]), int(torch.nonzero(out)[0][1])
        source = int(out[first]) - 1
        dy, dx = first[0] - source // 8, first[1] - source % 8
        assert -2 <= dy <= 2 and -2 <= dx <= 2
        expected = torch.zeros(8, 8)
        ys, xs = slice(max(0, dy), min(8, 8 + dy)), slice(max(0, dx), min(8, 8 + dx))
        expected[ys, xs] = image[0, 0, max(0, -dy) : min(8, 8 - dy), max(0, -dx) : min(8, 8 - dx)]
        assert torch.equal(out, expected)


def test_cutout_zeroes_one_square_of_half_the_side_at_most() -> None:
    ones = torch.ones(64, 3, 16, 16)
    out = cutout(ones, seeded(5))[:, 0]
    for image in out:
        holes = torch.nonzero(image == 0)
        assert 0 < len(holes) <= 64  # an 8 x 8 square, clipped by the border
        height = int(holes[:, 0].max() - holes[:, 0].min()) + 1
        width = int(holes[:, 1].max() - holes[:, 1].min()) + 1
        assert len(holes) == height * width and height <= 8 and width <= 8  # one rectangle
    assert (out == 0).sum(dim=(1, 2)).eq(64).float().mean() > 0.3  # many squares lie wholly inside


def test_off_is_the_input_itself_and_draws_nothing() -> None:
    x, generator = torch.rand(2, 3, 8, 8), seeded(6)
    state = generator.get_state()
    assert diff_augment(x, (), generator) is x
    assert torch.equal(generator.get_state(), state)  # the training run's random stream is today's


def test_an_unknown_transform_is_named() -> None:
    with pytest.raises(ValueError, match="'rotate'"):
        diff_augment(torch.zeros(1, 3, 4, 4), ("color", "rotate"))
