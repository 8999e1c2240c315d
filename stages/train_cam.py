"""DVC stage `train_cam`: VGG-GAP on the uncropped photos (identity labels only), its CAM boxes against Haar's."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.params import Params, load_params
from pipeline.core.runner import RunLog, run_stage, write_metrics
from pipeline.dataset.loader import ShardError
from pipeline.train.checkpoint import CheckpointError
from pipeline.train.pretrain_f import PretrainError
from pipeline.train.runtime import torchrun_env
from pipeline.train.train_cam import CamError, train_cam


def main(given: Params | None = None) -> None:
    """Run the stage with params.yaml, or with `given` params (`i2c` passes its -S overrides).

    Launch it with `torchrun --nproc_per_node N -m stages.train_cam` for DDP; rank 0 writes the outputs.
    """
    run_log = RunLog("train_cam")

    def body() -> None:
        params = given or load_params()
        section = params.cam
        if torchrun_env()[0] == 0:
            run_log.path = Path(section.run_log)
        result = train_cam(params)
        run_log.work = result.run
        if torchrun_env()[0] != 0:
            return
        metrics = result.metrics
        write_metrics(section.metrics, metrics)
        write_metrics(section.details, result.details)
        print(
            f"train_cam ({section.head} head): test top-1 {metrics['test_top1']:.3f} (chance "
            f"{metrics['chance_top1']:.3f}); localised {metrics['localised']:.3f} (floor "
            f"{metrics['floor_localised']:.3f}), mean IoU {metrics['mean_iou']:.3f} (floor "
            f"{metrics['floor_mean_iou']:.3f}) on {metrics['test_images']} photos; model saved to {section.model}"
        )

    run_stage("train_cam", body, expected=(CamError, PretrainError, CheckpointError, ShardError), run_log=run_log)


if __name__ == "__main__":
    main()
