"""CAM's models and boxes: VGG-GAP shapes and gradients, the map of a hand-built feature map, region selection, IoU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.evaluate.cam_boxes import Box, Localisation, cam_box, draw_overlay, floor, iou, prior_box, regions
from pipeline.models.cam import VGGGAP, build_cam_model, heat_maps, min_max, occlusion_map
from pipeline.models.vgg import VGG


@pytest.mark.parametrize(("input_size", "batch_norm"), [(64, True), (128, False)])
def test_vgg_gap_shapes_finite_outputs_and_a_gradient_for_every_parameter(input_size: int, batch_norm: bool) -> None:
    torch.manual_seed(0)
    model = VGGGAP(num_classes=5, input_size=input_size, width=0.125, batch_norm=batch_norm)
    x = torch.randn(2, 3, input_size, input_size)
    features = model.forward_features(x)
    side = input_size // 16  # conv5-3 keeps its resolution: four pools, no pool5
    assert features.shape == (2, 128, side, side)  # 1024 x 0.125 channels
    logits = model.forward_head(features)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    maps = model.class_map(features, torch.tensor([1, 3]))
    assert maps.shape == (2, side, side) and torch.isfinite(maps).all()
    (logits.square().sum() + maps.sum()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_the_finer_map_drops_pool4_only_keeps_f_s_layer_names_and_doubles_the_side() -> None:
    torch.manual_seed(0)
    coarse = VGGGAP(num_classes=3, input_size=128, width=0.125, map_stride=16)
    fine = VGGGAP(num_classes=3, input_size=128, width=0.125, map_stride=8)
    x = torch.randn(2, 3, 128, 128)
    assert coarse.forward_features(x).shape == (2, 128, 8, 8)
    assert fine.forward_features(x).shape == (2, 128, 16, 16)  # conv5-3 at 1/8 of the input: 4x the cells
    pools = [sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) for model in (coarse, fine)]
    assert pools == [4, 3]
    assert isinstance(fine.features[3][-1], torch.nn.Identity) and isinstance(fine.features[2][-1], torch.nn.MaxPool2d)
    f = VGG(num_classes=3, input_size=128, width=0.125)
    fine.features.load_state_dict(
        {k.removeprefix("features."): v for k, v in f.state_dict().items() if k.startswith("features.")}
    )  # strict: the conv weights f trained at 1/16 load unchanged
    logits = fine(x)
    logits.sum().backward()
    assert logits.shape == (2, 3) and all(p.grad is not None for p in fine.parameters())
    with pytest.raises(ValueError, match="map_stride=4"):
        VGGGAP(num_classes=3, input_size=128, width=0.125, map_stride=4)


def test_the_finer_map_boxes_a_small_face_wherever_it_falls_on_the_grid() -> None:
    """A 24 px face on a 256 px photo, at 8 offsets against the grid: boxed from a 32 x 32 map (8 px cells) and
    from a 16 x 16 one (16 px cells).

    The map fires on the cells the face covers, in proportion to the share of each cell that is face, as a perfect
    CAM would; the box is then found on the upsampled map at half its peak. 16 px cells cannot follow a face
    whose edges fall inside them; 8 px cells can.
    """

    def boxed(face: Box, cells: int) -> float:
        cell = 256 / cells
        heat = torch.zeros(1, 1, cells, cells)
        for row in range(cells):
            for col in range(cells):
                overlap_y = max(0.0, min(face.y + face.h, (row + 1) * cell) - max(face.y, row * cell))
                overlap_x = max(0.0, min(face.x + face.w, (col + 1) * cell) - max(face.x, col * cell))
                heat[0, 0, row, col] = overlap_x * overlap_y / cell**2
        up = torch.nn.functional.interpolate(heat, size=(256, 256), mode="bilinear", align_corners=False)
        box, _ = cam_box(min_max(up[:, 0])[0].numpy(), threshold=0.5)
        return iou(box, face)

    faces = [Box(96.0 + offset, 64.0 + offset, 24.0, 24.0) for offset in range(0, 16, 2)]
    fine, coarse = [boxed(face, 32) for face in faces], [boxed(face, 16) for face in faces]
    assert min(fine) > 0.8 and min(coarse) < 0.6 and np.mean(fine) > np.mean(coarse) + 0.1


def test_the_logit_is_the_mean_of_the_class_activation_map_plus_the_bias() -> None:
    torch.manual_seed(0)
    model = VGGGAP(num_classes=4, input_size=64, width=0.125).eval()
    features = model.forward_features(torch.randn(3, 3, 64, 64))
    logits = model.forward_head(features)
    for c in range(4):
        maps = model.class_map(features, torch.full((3,), c))
        assert torch.allclose(maps.mean(dim=(1, 2)) + model.classifier.bias[c], logits[:, c], atol=1e-5)


def test_heads_share_f_s_conv_stack_names_so_f_loads_into_both() -> None:
    f = VGG(num_classes=3, input_size=64, width=0.125)
    gap = build_cam_model("gap", 6, 64, 0.125, True)
    fc = build_cam_model("fc", 6, 64, 0.125, True)
    stack = {k.removeprefix("features."): v for k, v in f.state_dict().items() if k.startswith("features.")}
    gap.features.load_state_dict(stack)  # strict: every key and shape matches
    fc.features.load_state_dict(stack)
    assert isinstance(gap, VGGGAP) and isinstance(fc, VGG)
    with pytest.raises(ValueError, match="head='avg'"):
        build_cam_model("avg", 6, 64, 0.125, True)


def test_class_map_of_a_hand_built_feature_map_boxes_the_block_that_votes_for_the_class() -> None:
    """Channel 0 fires on rows 2-3, columns 4-6 of an 8 x 8 map; only class 1 weighs channel 0."""
    model = VGGGAP(num_classes=2, input_size=128, width=0.125)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.weight[1, 0] = 2.0  # class 1 <- channel 0
        model.classifier.weight[0, 1] = 1.0  # class 0 <- channel 1
    features = torch.zeros(1, model.cam_dim, 8, 8)
    features[0, 0, 2:4, 4:7] = 1.0
    features[0, 1, 6:8, 0:2] = 1.0
    with torch.no_grad():
        m1 = model.class_map(features, torch.tensor([1]))[0]
        m0 = model.class_map(features, torch.tensor([0]))[0]
    assert torch.equal(m1 > 0, features[0, 0] > 0) and float(m1.max()) == 2.0
    box, found = cam_box(m1.numpy(), threshold=0.2)
    assert box == Box(4, 2, 3, 2) and found == [box]  # x = column 4, y = row 2, 3 wide, 2 high
    box0, _ = cam_box(m0.numpy())
    assert box0 == Box(0, 6, 2, 2)


def test_heat_maps_upsample_the_cam_of_the_predicted_class_to_the_photo_side() -> None:
    torch.manual_seed(0)
    model = VGGGAP(num_classes=3, input_size=64, width=0.125).eval()
    logits, maps = heat_maps(model, torch.randn(2, 3, 64, 64), size=100)
    assert logits.shape == (2, 3) and maps.shape == (2, 100, 100)
    assert torch.allclose(maps.flatten(1).amax(1), torch.ones(2)) and torch.allclose(
        maps.flatten(1).amin(1), torch.zeros(2)
    )


def test_occlusion_map_finds_the_patch_a_classifier_depends_on() -> None:
    """A 'classifier' whose class-1 logit is the mean of the top-left 16 x 16 pixels."""

    class TopLeft(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            score = x[:, :, :16, :16].mean(dim=(1, 2, 3)) * 20
            return torch.stack([torch.zeros_like(score), score], dim=1)

    x = torch.ones(1, 3, 64, 64)
    drops = occlusion_map(TopLeft(), x, torch.tensor([1]), patch=16, stride=16)
    assert drops.shape == (1, 4, 4)
    assert float(drops[0, 0, 0]) > 0.4 and float(drops[0].flatten()[1:].abs().max()) < 1e-6
    _, maps = heat_maps(TopLeft(), x, size=64, occlusion=(16, 16))
    box, _ = cam_box(maps[0].numpy(), threshold=0.5)
    assert box is not None and iou(box, Box(0, 0, 16, 16)) > 0.5


@pytest.mark.parametrize("head", ["gap", "fc"])
def test_flip_maps_are_mirror_equivariant_and_average_both_views(head: str) -> None:
    """With flip, the mirror image gets the same logits and the mirrored map; the map averages both views."""
    torch.manual_seed(0)
    model = build_cam_model(head, 3, 64, 0.125, True).eval()
    x = torch.randn(2, 3, 64, 64)
    logits, maps = heat_maps(model, x, size=64, occlusion=(16, 16), flip=True)
    mirrored_logits, mirrored_maps = heat_maps(model, x.flip(3), size=64, occlusion=(16, 16), flip=True)
    assert torch.allclose(logits, mirrored_logits, atol=1e-5)
    assert torch.allclose(maps, mirrored_maps.flip(2), atol=1e-5)
    plain_logits, plain_maps = heat_maps(model, x, size=64, occlusion=(16, 16))
    flipped_logits, _ = heat_maps(model, x.flip(3), size=64, occlusion=(16, 16))
    assert torch.allclose(logits, (plain_logits + flipped_logits) / 2, atol=1e-5)
    assert not torch.allclose(maps, plain_maps, atol=1e-3)  # the mirror view changed the map


def two_blobs() -> np.ndarray:
    heat = np.zeros((40, 40))
    heat[5:15, 5:25] = 1.0  # 200 px
    heat[30:36, 30:36] = 0.5  # 36 px, above 0.2 of the peak
    heat[20, 2] = 0.1  # below the threshold
    return heat


def test_box_scale_resizes_the_box_about_its_centre_and_keeps_the_regions() -> None:
    heat = np.zeros((100, 100), np.float32)
    heat[20:60, 30:50] = 1.0  # one region: x 30..50, y 20..60
    box, found = cam_box(heat, 0.5, "largest", scale=0.5)
    assert found == [Box(30, 20, 20, 40)] and box == Box(35, 30, 10, 20)
    assert cam_box(heat, 0.5, "largest", scale=1.5)[0] == Box(25, 10, 30, 60)
    assert cam_box(heat, 0.5)[0] == found[0]


def test_largest_keeps_the_largest_region_and_every_encloses_all_regions() -> None:
    heat = two_blobs()
    assert regions(heat) == [Box(5, 5, 20, 10), Box(30, 30, 6, 6)]
    largest, found = cam_box(heat, 0.2, "largest")
    assert largest == Box(5, 5, 20, 10) and found == [largest]
    every, found = cam_box(heat, 0.2, "every")
    assert every == Box(5, 5, 31, 31) and len(found) == 2
    assert cam_box(heat, 0.6, "every")[0] == largest  # the 0.5 blob is below 60 % of the peak
    assert cam_box(np.zeros((8, 8)))[0] is None  # a flat map has no region
    with pytest.raises(ValueError, match="mode='all'"):
        cam_box(heat, 0.2, "all")


def test_iou_floor_and_localised_share() -> None:
    assert iou(Box(0, 0, 10, 10), Box(0, 0, 10, 10)) == 1.0
    assert iou(Box(0, 0, 10, 10), Box(5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou(Box(0, 0, 10, 10), Box(20, 20, 5, 5)) == 0.0
    scored = Localisation(0.5)
    for answer in (Box(0, 0, 10, 10), Box(5, 0, 10, 10), None):
        scored.add(answer, Box(0, 0, 10, 10))
    assert scored.localised == pytest.approx(1 / 3) and scored.mean_iou == pytest.approx((1 + 1 / 3) / 3)
    train = [Box(10, 10, 20, 20), Box(30, 10, 20, 20)]
    assert prior_box(train) == Box(20, 10, 20, 20)
    floors = floor([Box(20, 10, 20, 20), Box(60, 60, 20, 20)], train, side=100)
    assert floors["prior_localised"] == 0.5 and floors["prior_mean_iou"] == 0.5
    assert floors["whole_mean_iou"] == pytest.approx(0.04) and floors["whole_localised"] == 0.0


def test_overlay_draws_both_boxes_in_their_colours() -> None:
    photo = np.full((60, 80, 3), 128, np.uint8)
    out = draw_overlay(photo, np.zeros((15, 20)), [Box(10, 10, 20, 20)], Box(40, 30, 20, 20), text="", alpha=0.0)
    assert out.shape == photo.shape and tuple(out[10, 15]) == (0, 255, 0) and tuple(out[30, 45]) == (255, 0, 255)
    assert tuple(out[5, 5]) == (128, 128, 128)


def test_min_max_scales_each_map_to_zero_one() -> None:
    maps = min_max(torch.tensor([[[1.0, 3.0]], [[2.0, 2.0]]]))
    assert torch.equal(maps[0], torch.tensor([[0.0, 1.0]])) and torch.equal(maps[1], torch.zeros(1, 2))
