"""DVC stage `train_cam`: VGG-GAP on the uncropped photos (identity labels only), its CAM boxes against Haar's."""

from __future__ import annotations

from typing import Any

from pipeline.core.params import CamParams, Params
from pipeline.dataset.loader import ShardError
from pipeline.train.checkpoint import CheckpointError
from pipeline.train.pretrain_f import PretrainError
from pipeline.train.stage import run_training_stage
from pipeline.train.train_cam import CamError, train_cam


def summary(metrics: dict[str, Any], section: CamParams) -> str:
    return (
        f"train_cam ({section.head} head): test top-1 {metrics['test_top1']:.3f} (chance "
        f"{metrics['chance_top1']:.3f}); localised {metrics['localised']:.3f} (floor "
        f"{metrics['floor_localised']:.3f}), mean IoU {metrics['mean_iou']:.3f} (floor "
        f"{metrics['floor_mean_iou']:.3f}) on {metrics['test_images']} photos; model saved to {section.model}"
    )


def main(given: Params | None = None) -> None:
    """Run the stage with params.yaml, or with `given` params (`i2c` passes its -S overrides).

    Launch it with `torchrun --nproc_per_node N -m stages.train_cam` for DDP; rank 0 writes the outputs.
    """
    expected = (CamError, PretrainError, CheckpointError, ShardError)
    run_training_stage("train_cam", given, lambda p: p.cam, train_cam, summary, expected)


if __name__ == "__main__":
    main()
