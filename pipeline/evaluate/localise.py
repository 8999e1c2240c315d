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
# Face sizes the localisation is also reported by: the Haar box's side in photo pixels, [low, high)
SIZE_BINS = {"small (<70 px)": (0.0, 70.0), "medium (70-100 px)": (70.0, 100.0), "large (>=100 px)": (100.0, 1e9)}


def size_bin(box: Box) -> int:
    """Index into SIZE_BINS of a face box, by its side (the Haar boxes are square; the larger side otherwise)."""
    side = max(box.w, box.h)
    return next(i for i, (low, high) in enumerate(SIZE_BINS.values()) if low <= side < high)


def haar_boxes(data: ShardDataset) -> list[Box]:
    """The Haar face box of every sample of a split, in shard pixels, in split order."""
    return [Box(*map(float, row)) for row in data.index[list(BOX_COLUMNS)].to_numpy()]


Setting = tuple[float, float]  # (threshold, box scale) of cam_box


def localise(
    rt: Runtime, model: nn.Module, data: ShardDataset, section: CamParams, settings: Sequence[Setting] = ()
) -> dict[Setting, dict[str, Any]]:
    """Localisation of a split summed over every rank, per (threshold, box scale) (default: `cam.threshold`,
    `cam.box_scale`): localised share, mean IoU, an IoU histogram, regions per photo, and photos and localised
    share per face size (SIZE_BINS). The maps are computed once for all settings.

    The box is that of the predicted class's map, as `i2c cam` draws it: no label is looked at.
    """
    thresholds = list(settings) or [(section.threshold, section.box_scale)]
    truths = dict(zip(data.rows.tolist(), haar_boxes(data), strict=True))
    side = int(data.image_shape[0])
    totals = torch.zeros(len(thresholds), 4 + IOU_BINS, dtype=torch.float64)
    by_size = torch.zeros(len(thresholds), len(SIZE_BINS), 2, dtype=torch.float64)  # photos, localised
    was_training = model.training
    model.eval()
    for batch, keep in eval_batches(rt, data, section.batch_size):
        if not keep.any():
            continue
        x = rt.memory_format(to_model_input(rt.to_device(batch["image"][keep]), section.input_size))
        with rt.autocast():
            _, maps = heat_maps(model, x, side, (section.occlusion_patch, section.occlusion_stride), section.eval_flip)
        for row, heat in zip(batch["index"][keep].tolist(), maps.numpy(), strict=True):
            for i, (threshold, scale) in enumerate(thresholds):
                box, found = cam_box(heat, threshold, section.boxes, scale)
                value = iou(box, truths[row]) if box is not None else 0.0
                totals[i, :4] += torch.tensor([1.0, value >= section.min_iou, value, len(found)], dtype=torch.float64)
                totals[i, 4 + min(IOU_BINS - 1, int(value * IOU_BINS))] += 1
                by_size[i, size_bin(truths[row])] += torch.tensor([1.0, value >= section.min_iou])
    model.train(was_training)
    totals, by_size = rt.all_sum(totals), rt.all_sum(by_size)
    out = {}
    for threshold, row, sizes in zip(thresholds, totals, by_size, strict=True):
        n = max(1.0, float(row[0]))
        out[threshold] = {
            "localised": float(row[1]) / n,
            "mean_iou": float(row[2]) / n,
            "regions_per_photo": float(row[3]) / n,
            "iou_histogram": [int(v) for v in row[4:].tolist()],
            "by_size": {
                name: {"photos": int(count), "localised": float(hits) / count if count else None}
                for name, (count, hits) in zip(SIZE_BINS, sizes.tolist(), strict=True)
            },
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
        box, found = cam_box(heat, section.threshold, section.boxes, section.box_scale)
        truth = truths[row]
        value = iou(box, truth) if box is not None else 0.0
        text = f"{labels[true][:8]}>{labels[predicted][:8]} IoU {value:.2f} {max(truth.w, truth.h):.0f}px"
        drawn = found if section.boxes == "every" else ([box] if box is not None else [])
        tiles.append(draw_overlay(image, heat, drawn, truth, text))
    return image_grid(tiles, cols=4, pad=3)
