"""`train_cam`: VGG-GAP (or the FC head) on the uncropped photo shards, then top-1 and CAM-box localisation on test."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.checkpoint import load_checkpoint
from pipeline.core.params import CamParams, resolved
from pipeline.core.progress import Progress
from pipeline.core.reuse import code_version
from pipeline.core.runner import StageError
from pipeline.dataset.loader import ShardDataset, to_model_input
from pipeline.evaluate.cam_boxes import Box, floor
from pipeline.evaluate.classify import ClassCounts, chance_topk, majority_share
from pipeline.evaluate.localise import BOX_COLUMNS, IOU_BINS, SIZE_BINS, haar_boxes, localise, overlay_sheet, size_bin
from pipeline.models.cam import Tail, build_cam_model, freeze, save_cam
from pipeline.models.face_encoder import ARCH_KEYS as F_ARCH_KEYS
from pipeline.models.face_encoder import F_FORMAT
from pipeline.train.checkpoint import RunKey, loop_params
from pipeline.train.classifier import ClassifierStage, FaceData, read_faces
from pipeline.train.skeleton import Networks

# Keys of the section that never change the trained weights. The box keys (threshold, boxes, min_iou, occlusion_*)
# shape only the evaluation, which every run redoes; they stay in the key anyway, so cam.pt always says what made it.
NOT_SHAPING = ("log_every", "checkpoint_every", "overlays", "model", "metrics", "details", "run_log", "live_dir")
NOT_SHAPING += ("checkpoint_dir",)
OVERLAY_FILE = "test_overlays.png"
# (threshold, box scale) pairs reported on val, so that new defaults are chosen there
SWEEP = tuple((t, s) for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9) for s in (0.5, 0.6, 0.7, 0.8, 1.0))


class TrainCam(ClassifierStage):
    """VGG-GAP (conv5-3 -> 3x3 conv -> GAP -> softmax) on `<pack.out_dir>/photos`, its conv stack from f; the first
    `freeze_blocks` blocks stay as f made them, and their output is cached per photo and view."""

    name, section_name, loop_name = "train_cam", "cam", "cam"
    cache: torch.Tensor | None = None

    def read_data(self) -> ShardDataset:
        root = Path(self.params.pack.out_dir) / "photos"
        self.data = read_faces(root)
        missing = [c for c in BOX_COLUMNS if c not in self.data.train.index.columns]
        if missing:
            raise StageError(f"{root}/index.parquet lacks the Haar box columns {missing}; re-run `dvc repro pack`")
        self.data_id: str | dict[str, str] = self.data.data_id
        if self.section.init == "f":
            self.f_state, f_id = f_conv_stack(self.section, Path(self.params.pretrain_f.model))
            self.data_id = {"the shards": self.data.data_id, "f.pt": f_id}
        return self.data.train

    def build(self) -> Networks:
        section = self.section
        self.arch = {
            "head": section.head,
            "num_classes": len(self.data.labels),
            "input_size": section.input_size,
            "width": section.width,
            "batch_norm": section.batch_norm,
            "cam_channels": section.cam_channels,
            "dropout": section.dropout,
            "map_stride": section.map_stride,
        }
        model = build_cam_model(**self.arch)
        if section.init == "f":
            model.features.load_state_dict(self.f_state)
        self.frozen = freeze(model, section.freeze_blocks)
        trained = Tail(model, section.freeze_blocks) if section.freeze_blocks else model
        return self.networks(model, self.rt.prepare(trained))

    def run_key(self) -> RunKey:
        return run_key(self.section, self.data_id)

    def before_fit(self) -> None:
        section = self.section
        self.position = {int(row): i for i, row in enumerate(self.data.train.rows.tolist())}
        if section.freeze_blocks and section.cached_views and self.trainer.step < section.steps:
            self.cache = self.cache_frozen()

    @torch.no_grad()
    def cache_frozen(self) -> torch.Tensor:
        """The frozen blocks' output for every training photo in `cached_views` views, (n, views, C, h, w) float16.

        View 0 is the photo, view 1 its mirror, the others augmented per `cam.augment` (seeded by `cam.seed`). The
        frozen blocks are most of the network's work at this input size, and their output never changes, so the
        training steps read it from here instead (12x faster a step at the default).
        """
        rt, section, data = self.rt, self.section, self.data.train
        self.frozen.eval()
        generator = torch.Generator().manual_seed(section.seed)
        views, started = [], time.perf_counter()
        progress = Progress("train_cam: caching frozen blocks", 0, section.cached_views, "view", rt.is_main)
        for view in range(section.cached_views):
            chunks = []
            for start in range(0, len(data), section.batch_size):
                images = rt.to_device(
                    data.gather(np.arange(start, min(len(data), start + section.batch_size)))["image"]
                )
                x = to_model_input(images, section.input_size, self.augment if view > 1 else None, generator)
                x = x.flip(3) if view == 1 else x
                with rt.autocast():
                    chunks.append(self.frozen(rt.memory_format(x)).to("cpu", torch.float16).contiguous())
            views.append(torch.cat(chunks))
            progress.update(view + 1)
        progress.close()
        cache = torch.stack(views, 1)
        if rt.is_main:
            self.say(
                f"train_cam: cached the frozen blocks for {len(data)} photos x {section.cached_views} views "
                f"{tuple(cache.shape[2:])} in {time.perf_counter() - started:.1f} s "
                f"({cache.numel() * 2 / 2**20:.0f} MiB)"
            )
        return cache

    def train_step(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The classifier step; with frozen blocks, only the blocks after them (and the head) train."""
        if not self.section.freeze_blocks:
            return super().train_step(batch, generator)
        rt, section = self.rt, self.section
        # ---- the frozen blocks' output: a cached view, or computed now (cached_views 0: any augmentation)
        if self.cache is not None:
            rows = torch.tensor([self.position[int(r)] for r in batch["index"].tolist()])
            views = torch.randint(0, self.cache.shape[1], (len(rows),), generator=generator)
            inputs = rt.to_device(self.cache[rows, views])
        else:
            self.frozen.eval()
            x = to_model_input(rt.to_device(batch["image"]), section.input_size, self.augment, generator)
            with torch.no_grad(), rt.autocast():
                inputs = self.frozen(rt.memory_format(x))
        target = rt.to_device(batch["label"])
        # ---- forward, backward and step of the rest
        with rt.autocast():
            logits = self.net(rt.memory_format(inputs.float())).float()
        loss = F.cross_entropy(logits, target, label_smoothing=section.label_smoothing)
        self.trainer.backward(loss)
        return {"train/loss": loss.detach(), "train/top1": (logits.argmax(1) == target).float().mean()}

    def evaluate(self) -> dict[str, float]:
        if not len(self.data.val):
            return {}
        counts = self.count(self.data.val)
        out = {"val/top1": counts.topk(1), "val/loss": counts.loss()}
        if self.section.head == "gap":  # the CAM is free; the FC head's occlusion map costs a forward pass per patch
            located = next(iter(localise(self.rt, self.model, self.data.val, self.section).values()))
            out.update({"val/localised": located["localised"], "val/mean_iou": located["mean_iou"]})
        return out

    def finish(self) -> tuple[dict[str, Any], dict[str, Any]]:
        rt, data = self.rt, self.data
        best = self.load_selected()
        # how the threshold is chosen: val only (the test split never picks anything)
        gap = self.section.head == "gap"
        sweep = localise(rt, self.model, data.val, self.section, SWEEP) if len(data.val) and gap else {}
        if self.section.calibrate and sweep:  # the pair the val sweep likes best: test, overlays and cam.pt use it
            threshold, scale = calibrated_pair(sweep)
            self.section = self.section.model_copy(update={"threshold": threshold, "box_scale": scale})
        section = self.section
        test = self.count(data.test)
        located = next(iter(localise(rt, self.model, data.test, section).values()))
        floors = size_floors(haar_boxes(data.test), haar_boxes(data.train), int(data.test.image_shape[0]), section)
        return flat_metrics(test, located, floors, len(data.labels)), details(
            section, test, located, floors, data, best, sweep
        )

    def save(self, metrics: dict[str, Any]) -> None:
        """cam.pt and the test overlay sheet."""
        section, data = self.section, self.data
        info = {"params": resolved(section), "photo_size": int(data.test.image_shape[0]), "metrics": metrics}
        save_cam(
            Path(section.model),
            self.model.state_dict(),
            self.arch,
            data.labels,
            info | {"run": self.trainer.key.record()},
        )
        self.trainer.live.image(OVERLAY_FILE, overlay_sheet(self.model.eval(), data.test, data.labels, section))

    def summary(self, metrics: dict[str, Any], details: dict[str, Any]) -> str:
        return (
            f"train_cam ({self.section.head} head): test top-1 {metrics['test_top1']:.3f} (chance "
            f"{metrics['chance_top1']:.3f}); localised {metrics['localised']:.3f} (floor "
            f"{metrics['floor_localised']:.3f}), mean IoU {metrics['mean_iou']:.3f} (floor "
            f"{metrics['floor_mean_iou']:.3f}) on {details['data']['test_images']} photos; by face size: "
            + ", ".join(
                f"{name.split()[0]} {row['localised']:.3f} of {row['photos']} (floor {row['floor']:.3f})"
                for name, row in details["by_size"].items()
                if row["photos"]
            )
        )


def calibrated_pair(sweep: dict[tuple[float, float], dict[str, Any]]) -> tuple[float, float]:
    """The (threshold, box scale) of the val sweep with the largest localised share; mean IoU breaks ties, then the
    sweep's order."""
    return max(sweep, key=lambda pair: (sweep[pair]["localised"], sweep[pair]["mean_iou"]))


def run_key(section: CamParams, data_id: str | dict[str, str]) -> RunKey:
    """What the weights depend on: the shaping params (threads left out), the code version, the data (and f)."""
    return RunKey(loop_params(resolved(section), NOT_SHAPING), code_version("pipeline.train.train_cam"), data_id)


def f_conv_stack(section: CamParams, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """conv1..conv5-3 of f (`features.*` weights) and the sha256 of f.pt, for `cam.init: f`.

    Raises:
        StageError: when f.pt is missing or its conv stack has another width or batch_norm than the cam section.
        pipeline.core.checkpoint.CheckpointError: when f.pt is corrupt.
    """
    if not path.is_file():
        raise StageError(f"{path} not found; run `dvc repro pretrain_f` first, or set cam.init=scratch")
    payload = load_checkpoint(path, F_FORMAT)
    arch = {key: payload["arch"][key] for key in F_ARCH_KEYS}
    for key in ("width", "batch_norm"):
        if arch[key] != getattr(section, key):
            raise StageError(
                f"cam.{key}={getattr(section, key)!r} but f ({path}) was trained with {key}={arch[key]!r}; "
                f"set cam.{key}={arch[key]!r} or cam.init=scratch"
            )
    state = {k.removeprefix("features."): v for k, v in payload["state"].items() if k.startswith("features.")}
    return state, hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def size_floors(test: list[Box], train: list[Box], side: int, section: CamParams) -> dict[str, Any]:
    """The floors of the whole test split (`floor`), and the mean-box floor of each face size's photos (`by_size`)."""
    floors: dict[str, Any] = floor(test, train, side, section.min_iou)
    floors["by_size"] = {}
    for index, name in enumerate(SIZE_BINS):
        subset = [box for box in test if size_bin(box) == index]
        floors["by_size"][name] = floor(subset, train, side, section.min_iou)["prior_localised"] if subset else None
    return floors


def flat_metrics(test: ClassCounts, located: dict[str, Any], floors: dict[str, Any], classes: int) -> dict[str, Any]:
    """The numbers of metrics/cam.json: top-1 beside chance, localisation (all faces and the small ones) beside the
    mean-box floor."""
    small = next(iter(SIZE_BINS))
    return {
        "test_top1": round(test.topk(1), 4),
        "chance_top1": round(chance_topk(1, classes), 4),
        "localised": round(located["localised"], 4),
        "floor_localised": round(floors["prior_localised"], 4),
        "mean_iou": round(located["mean_iou"], 4),
        "floor_mean_iou": round(floors["prior_mean_iou"], 4),
        "localised_small": _rounded(located["by_size"][small]["localised"]),
        "floor_localised_small": _rounded(floors["by_size"][small]),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def details(
    section: CamParams,
    test: ClassCounts,
    located: dict[str, Any],
    floors: dict[str, float],
    data: FaceData,
    best: dict[str, Any],
    sweep: dict[tuple[float, float], dict[str, Any]],
) -> dict[str, Any]:
    """The breakdown: the data's counts, the map used, IoU histogram, both floors, the val threshold sweep, the
    selected step, per-identity accuracy."""
    labels = data.labels
    per_identity = {
        labels[i]: round(correct / total, 4) if total else None for i, (correct, total) in enumerate(test.per_class())
    }
    return {
        "data": {"identities": len(labels), "train_images": len(data.train), "test_images": test.total},
        "majority_top1": round(majority_share([total for _, total in test.per_class()]), 4),
        "map": "class activation map" if section.head == "gap" else "occlusion (FC head has no CAM)",
        "boxes": section.boxes,
        "threshold": section.threshold,
        "box_scale": section.box_scale,
        "calibrated": section.calibrate and bool(sweep),  # the pair above is the val sweep's best
        "iou_histogram": {f"{i / IOU_BINS:.1f}": c for i, c in enumerate(located["iou_histogram"])},
        "regions_per_photo": round(located["regions_per_photo"], 3),
        "map_side": section.input_size // section.map_stride if section.head == "gap" else None,
        "by_size": {
            name: {**counts, "localised": _rounded(counts["localised"]), "floor": _rounded(floors["by_size"][name])}
            for name, counts in located["by_size"].items()
        },
        "floors": {k: round(v, 4) for k, v in floors.items() if k != "by_size"},
        "val_sweep": {
            f"threshold {t:.1f}, box scale {s:.1f}": {
                "localised": round(v["localised"], 4),
                "mean_iou": round(v["mean_iou"], 4),
                **{f"localised_{name.split()[0]}": _rounded(row["localised"]) for name, row in v["by_size"].items()},
            }
            for (t, s), v in sweep.items()
        },
        "selected": {
            "step": int(best["step"]),
            **{k.replace("/", "_"): round(v, 4) for k, v in best["metrics"].items()},
        },
        "test_accuracy_per_identity": per_identity,
    }
