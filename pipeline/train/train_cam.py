"""`train_cam`: VGG-GAP (or the FC head) on the uncropped photo shards, then top-1 and CAM-box localisation on test."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pipeline.core.params import CamParams, Params, resolved
from pipeline.core.reuse import code_version, shaping_params
from pipeline.core.viz import image_grid
from pipeline.dataset.loader import Augment, ShardDataset, to_model_input
from pipeline.evaluate.cam_boxes import Box, cam_box, draw_overlay, floor, iou
from pipeline.evaluate.classify import ClassCounts, chance_topk, majority_share
from pipeline.models.cam import VGGGAP, build_cam_model, heat_maps, save_cam
from pipeline.models.face_encoder import ARCH_KEYS as F_ARCH_KEYS
from pipeline.models.face_encoder import F_FORMAT
from pipeline.train.checkpoint import RunKey, load_checkpoint
from pipeline.train.loop import eval_batches
from pipeline.train.pretrain_f import FaceData, classifier_step, classifier_trainer, count_split, read_faces
from pipeline.train.runtime import Runtime, runtime

# Keys of the section that never change the trained weights. The box keys (threshold, boxes, min_iou, occlusion_*)
# shape only the evaluation, which every run redoes; they stay in the key anyway, so cam.pt always says what made it.
NOT_SHAPING = (
    "log_every",
    "checkpoint_every",
    "overlays",
    "model",
    "metrics",
    "details",
    "run_log",
    "live_dir",
    "checkpoint_dir",
)
# pack's BOX_COLUMNS (pipeline.dataset.shards; a test keeps them equal). Importing shards would tie this stage's code
# version to the Haar detector that pack imports, and retrain CAM on every change of align's code.
BOX_COLUMNS = ("box_x", "box_y", "box_w", "box_h")
OVERLAY_FILE = "test_overlays.png"
IOU_BINS = 10
SWEEP = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # thresholds reported on val, so a new default is chosen there


class CamError(ValueError):
    """The photo shards or f cannot train the CAM model as asked; the message says what to do."""


@dataclass(frozen=True)
class CamResult:
    """What a train_cam run produced: the flat metrics, the long details, and what the run itself did."""

    metrics: dict[str, Any]
    details: dict[str, Any]
    run: dict[str, Any]


def read_photos(root: Path) -> FaceData:
    """The photo shards' splits and label map; every row must carry its Haar box.

    Raises:
        CamError: when the index has no box columns (shards packed by an older `pack`).
        pipeline.train.pretrain_f.PretrainError: when there are no labels or the train or test split is empty.
        pipeline.dataset.loader.ShardError: for a missing or damaged shard.
    """
    data = read_faces(root)
    missing = [c for c in BOX_COLUMNS if c not in data.train.index.columns]
    if missing:
        raise CamError(f"{root}/index.parquet lacks the Haar box columns {missing}; re-run `dvc repro pack`")
    return data


def haar_boxes(data: ShardDataset) -> list[Box]:
    """The Haar face box of every sample of a split, in shard pixels, in split order."""
    return [Box(*map(float, row)) for row in data.index[list(BOX_COLUMNS)].to_numpy()]


def f_conv_stack(section: CamParams, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """conv1..conv5-3 of f (`features.*` weights) and the sha256 of f.pt, for `cam.init: f`.

    Raises:
        CamError: when f.pt is missing or its conv stack has another width or batch_norm than the cam section.
        pipeline.train.checkpoint.CheckpointError: when f.pt is corrupt.
    """
    if not path.is_file():
        raise CamError(f"{path} not found; run `dvc repro pretrain_f` first, or set cam.init=scratch")
    payload = load_checkpoint(path, F_FORMAT)
    arch = {key: payload["arch"][key] for key in F_ARCH_KEYS}
    for key in ("width", "batch_norm"):
        if arch[key] != getattr(section, key):
            raise CamError(
                f"cam.{key}={getattr(section, key)!r} but f ({path}) was trained with {key}={arch[key]!r}; "
                f"set cam.{key}={arch[key]!r} or cam.init=scratch"
            )
    state = {k.removeprefix("features."): v for k, v in payload["state"].items() if k.startswith("features.")}
    return state, hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def build(section: CamParams, num_classes: int) -> tuple[nn.Module, dict[str, Any]]:
    """The model of the section and its constructor arguments (saved in cam.pt)."""
    arch = {
        "head": section.head,
        "num_classes": num_classes,
        "input_size": section.input_size,
        "width": section.width,
        "batch_norm": section.batch_norm,
        "cam_channels": section.cam_channels,
        "dropout": section.dropout,
    }
    return build_cam_model(**arch), arch


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


@torch.no_grad()
def cache_frozen(
    rt: Runtime, frozen: nn.Module, data: ShardDataset, section: CamParams, augment: Augment, say: Callable
) -> torch.Tensor:
    """The frozen blocks' output for every training photo in `cached_views` views, (n, views, C, h, w) float16.

    View 0 is the photo, view 1 its mirror, the others augmented per `cam.augment` (seeded by `cam.seed`). The
    frozen blocks are most of the network's work at this input size, and their output never changes, so the
    training steps read it from here instead (12x faster a step at the default).
    """
    frozen.eval()
    generator = torch.Generator().manual_seed(section.seed)
    views, started = [], time.perf_counter()
    for view in tqdm(range(section.cached_views), desc="train_cam: caching frozen blocks", unit="view", leave=False):
        chunks = []
        for start in range(0, len(data), section.batch_size):
            images = rt.to_device(data.gather(np.arange(start, min(len(data), start + section.batch_size)))["image"])
            x = to_model_input(images, section.input_size, augment if view > 1 else None, generator)
            x = x.flip(3) if view == 1 else x
            with rt.autocast():
                chunks.append(frozen(rt.memory_format(x)).to("cpu", torch.float16).contiguous())
        views.append(torch.cat(chunks))
    cache = torch.stack(views, 1)
    if rt.is_main:
        say(
            f"train_cam: cached the frozen blocks for {len(data)} photos x {section.cached_views} views "
            f"{tuple(cache.shape[2:])} in {time.perf_counter() - started:.1f} s ({cache.numel() * 2 / 2**20:.0f} MiB)"
        )
    return cache


def frozen_step(
    rt: Runtime,
    tail: nn.Module,
    frozen: nn.Module,
    trainer: Any,
    data: ShardDataset,
    section: CamParams,
    augment: Augment,
    cache: torch.Tensor | None,
) -> Callable[[dict[str, torch.Tensor], torch.Generator], dict[str, torch.Tensor]]:
    """One step that trains only the blocks after the frozen ones (and the head), from the cache or on the fly."""
    position = {int(row): i for i, row in enumerate(data.rows.tolist())}

    def train_step(batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        # ---- the frozen blocks' output: a cached view, or computed now (cached_views 0: any augmentation)
        if cache is not None:
            rows = torch.tensor([position[int(r)] for r in batch["index"].tolist()])
            views = torch.randint(0, cache.shape[1], (len(rows),), generator=generator)
            inputs = rt.to_device(cache[rows, views])
        else:
            frozen.eval()
            x = to_model_input(rt.to_device(batch["image"]), section.input_size, augment, generator)
            with torch.no_grad(), rt.autocast():
                inputs = frozen(rt.memory_format(x))
        target = rt.to_device(batch["label"])
        # ---- forward, backward and step of the rest
        with rt.autocast():
            logits = tail(rt.memory_format(inputs.float())).float()
        loss = F.cross_entropy(logits, target, label_smoothing=section.label_smoothing)
        trainer.backward(loss)
        return {"train/loss": loss.detach(), "train/top1": (logits.argmax(1) == target).float().mean()}

    return train_step


def run_key(section: CamParams, data_id: str) -> RunKey:
    """What the weights depend on: the shaping params (threads left out), the code version, the data (and f)."""
    params = shaping_params(resolved(section), NOT_SHAPING)
    params["runtime"] = {k: v for k, v in params["runtime"].items() if k != "threads"}
    return RunKey(params, code_version("pipeline.train.train_cam"), data_id)


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
    """The first `overlays` test photos: heat map, CAM box (green), Haar box (magenta), `true>predicted IoU`."""
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


def flat_metrics(
    test: ClassCounts, located: dict[str, float], floors: dict[str, float], val: dict[str, float], data: FaceData, step
) -> dict[str, Any]:
    """The few numbers of metrics/cam.json: top-1 beside chance, localisation beside the mean-box floor."""
    n = len(data.labels)
    metrics = {
        "test_top1": round(test.topk(1), 4),
        "chance_top1": round(chance_topk(1, n), 4),
        "majority_top1": round(majority_share([total for _, total in test.per_class()]), 4),
        "localised": round(located["localised"], 4),
        "floor_localised": round(floors["prior_localised"], 4),
        "mean_iou": round(located["mean_iou"], 4),
        "floor_mean_iou": round(floors["prior_mean_iou"], 4),
        "identities": n,
        "test_images": test.total,
        "train_images": len(data.train),
        "selected_step": step,
    }
    if "val/top1" in val:
        metrics["val_top1"] = round(val["val/top1"], 4)
    return metrics


def details(
    section: CamParams,
    test: ClassCounts,
    located: dict[str, Any],
    floors: dict[str, float],
    labels: list[str],
    best: dict[str, Any],
    sweep: dict[float, dict[str, Any]],
) -> dict[str, Any]:
    """The long breakdown: the map used, IoU histogram, both floors, per-identity accuracy, the selected step."""
    per_identity = {
        labels[i]: round(correct / total, 4) if total else None for i, (correct, total) in enumerate(test.per_class())
    }
    return {
        "map": "class activation map" if section.head == "gap" else "occlusion (FC head has no CAM)",
        "boxes": section.boxes,
        "threshold": section.threshold,
        "iou_histogram": {f"{i / IOU_BINS:.1f}": c for i, c in enumerate(located["iou_histogram"])},
        "regions_per_photo": round(located["regions_per_photo"], 3),
        "floors": {k: round(v, 4) for k, v in floors.items()},
        "test_accuracy_per_identity": per_identity,
        "val_threshold_sweep": {
            f"{t:.1f}": {"localised": round(v["localised"], 4), "mean_iou": round(v["mean_iou"], 4)}
            for t, v in sweep.items()
        },
        "selected": {
            "step": int(best["step"]),
            **{k.replace("/", "_"): round(v, 4) for k, v in best["metrics"].items()},
        },
    }


def train_cam(params: Params, say: Callable[[str], None] = print) -> CamResult:
    """Train per params.cam on `<pack.out_dir>/photos`; writes cam.pt and the plots, returns the numbers.

    Raises:
        CamError, pipeline.train.pretrain_f.PretrainError: for data or an f that cannot train the model.
        pipeline.train.checkpoint.CheckpointError: for a corrupt or foreign checkpoint or f.pt.
    """
    section = params.cam
    data = read_photos(Path(params.pack.out_dir) / "photos")
    labels, size = data.labels, section.input_size
    data_id = data.data_id
    if section.init == "f":
        f_state, f_id = f_conv_stack(section, Path(params.pretrain_f.model))
        data_id = f"{data_id}+f:{f_id}"
    with runtime(section.runtime, section.seed) as rt:
        model, arch = build(section, len(labels))
        if section.init == "f":
            model.features.load_state_dict(f_state)
        frozen = freeze(model, section.freeze_blocks)
        net = rt.prepare(Tail(model, section.freeze_blocks) if section.freeze_blocks else model)
        trainer, stream, augment = classifier_trainer(
            rt, section, model, run_key(section, data_id), data, ("train_cam", "cam"), say
        )
        if section.freeze_blocks:
            cache = None
            if section.cached_views and trainer.step < section.steps:
                cache = cache_frozen(rt, frozen, data.train, section, augment, say)
            train_step = frozen_step(rt, net, frozen, trainer, data.train, section, augment, cache)
        else:
            train_step = classifier_step(rt, net, trainer, size, augment, section.label_smoothing)

        def evaluate() -> dict[str, float]:
            counts = count_split(rt, model, data.val, size, section.batch_size, section.eval_flip)
            out = {"val/top1": counts.topk(1), "val/loss": counts.loss()}
            if section.head == "gap":  # the CAM is free; the FC head's occlusion map costs a forward pass per patch
                located = localise(rt, model, data.val, section)[section.threshold]
                out.update({"val/localised": located["localised"], "val/mean_iou": located["mean_iou"]})
            return out

        fit = trainer.fit(stream, train_step, evaluate if len(data.val) else None)
        model.load_state_dict(trainer.selected())
        best = trainer.best or {"step": trainer.step, "metrics": {}}
        test = count_split(rt, model, data.test, size, section.batch_size, section.eval_flip)
        located = localise(rt, model, data.test, section)[section.threshold]
        # how the threshold was chosen: val only (the test split never picks anything)
        sweep = localise(rt, model, data.val, section, SWEEP) if len(data.val) and section.head == "gap" else {}
        floors = floor(haar_boxes(data.test), haar_boxes(data.train), int(data.test.image_shape[0]), section.min_iou)
        metrics = flat_metrics(test, located, floors, best["metrics"], data, int(best["step"]))
        run = fit.record(rt.world_size, rt.device)
        if rt.is_main:
            info = {"params": resolved(section), "photo_size": int(data.test.image_shape[0]), "metrics": metrics}
            save_cam(Path(section.model), model.state_dict(), arch, labels, {**info, "run": trainer.key.record()})
            trainer.live.image(OVERLAY_FILE, overlay_sheet(model.eval(), data.test, labels, section))
            say(
                f"train_cam: {fit.step - fit.start_step} steps in {fit.seconds:.1f} s "
                f"({run['images_per_s']:.0f} img/s), selected step {best['step']}"
            )
        trainer.close()
    return CamResult(metrics, details(section, test, located, floors, labels, best, sweep), run)
