"""CAM localisation of a split against its Haar boxes (localised share, IoU histogram), and the overlay sheet."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.core.params import CamParams
from pipeline.core.viz import image_grid
from pipeline.dataset.loader import ShardDataset, to_model_input
from pipeline.evaluate.cam_boxes import Box, cam_box, draw_overlay, iou
from pipeline.models.cam import heat_maps
from pipeline.train.loop import eval_batches
from pipeline.train.runtime import Runtime

# pack's BOX_COLUMNS (pipeline.dataset.shards; a test keeps them equal). Importing shards would tie this code
# version to the Haar detector that pack imports, and retrain CAM on every change of align's code.
BOX_COLUMNS = ("box_x", "box_y", "box_w", "box_h")
IOU_BINS = 10


def haar_boxes(data: ShardDataset) -> list[Box]:
    """The Haar face box of every sample of a split, in shard pixels, in split order."""
    return [Box(*map(float, row)) for row in data.index[list(BOX_COLUMNS)].to_numpy()]


def localise(
    rt: Runtime, model: nn.Module, data: ShardDataset, section: CamParams, thresholds: Sequence[float] = ()
) -> dict[float, dict[str, Any]]:
    """Localisation of a split summed over every rank, per threshold (default: `cam.threshold`): localised share,
    mean IoU, an IoU histogram and regions per photo. The maps are computed once for all thresholds.

    The box is that of the predicted class's map, as `i2c cam` draws it: no label is looked at.
    """
    thresholds = list(thresholds) or [section.threshold]
    truths = dict(zip(data.rows.tolist(), haar_boxes(data), strict=True))
    side = int(data.image_shape[0])
    totals = torch.zeros(len(thresholds), 4 + IOU_BINS, dtype=torch.float64)
    was_training = model.training
    model.eval()
    for batch, keep in eval_batches(rt, data, section.batch_size):
        if not keep.any():
            continue
        x = rt.memory_format(to_model_input(rt.to_device(batch["image"][keep]), section.input_size))
        with rt.autocast():
            _, maps = heat_maps(model, x, side, (section.occlusion_patch, section.occlusion_stride), section.eval_flip)
        for row, heat in zip(batch["index"][keep].tolist(), maps.numpy(), strict=True):
            for i, threshold in enumerate(thresholds):
                box, found = cam_box(heat, threshold, section.boxes)
                value = iou(box, truths[row]) if box is not None else 0.0
                totals[i, :4] += torch.tensor([1.0, value >= section.min_iou, value, len(found)], dtype=torch.float64)
                totals[i, 4 + min(IOU_BINS - 1, int(value * IOU_BINS))] += 1
    model.train(was_training)
    totals = rt.all_sum(totals)
    out = {}
    for threshold, row in zip(thresholds, totals, strict=True):
        n = max(1.0, float(row[0]))
        out[threshold] = {
            "localised": float(row[1]) / n,
            "mean_iou": float(row[2]) / n,
            "regions_per_photo": float(row[3]) / n,
            "iou_histogram": [int(v) for v in row[4:].tolist()],
        }
    return out


@torch.no_grad()
def overlay_sheet(model: nn.Module, data: ShardDataset, labels: list[str], section: CamParams) -> np.ndarray:
    """The first `overlays` photos: heat map, CAM box (green), Haar box (magenta), `true>predicted IoU`."""
    batch = data.gather(np.arange(min(section.overlays, len(data))))
    device = next(model.parameters()).device
    x = to_model_input(batch["image"].to(device), section.input_size)
    side = int(data.image_shape[0])
    logits, maps = heat_maps(model, x, side, (section.occlusion_patch, section.occlusion_stride), section.eval_flip)
    truths = dict(zip(data.rows.tolist(), haar_boxes(data), strict=True))
    tiles = []
    for image, heat, row, true, predicted in zip(
        batch["image"].numpy(),
        maps.numpy(),
        batch["index"].tolist(),
        batch["label"].tolist(),
        logits.argmax(1).tolist(),
        strict=True,
    ):
        box, found = cam_box(heat, section.threshold, section.boxes)
        truth = truths[row]
        value = iou(box, truth) if box is not None else 0.0
        text = f"{labels[true][:8]}>{labels[predicted][:8]} IoU {value:.2f}"
        drawn = found if section.boxes == "every" else ([box] if box is not None else [])
        tiles.append(draw_overlay(image, heat, drawn, truth, text))
    return image_grid(tiles, cols=4, pad=3)
