"""DVC stage `pretrain_f`: the VGG-16-D identity classifier on the face shards; its penultimate layer is f."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.params import Params, load_params
from pipeline.core.runner import RunLog, run_stage, write_metrics
from pipeline.dataset.loader import ShardError
from pipeline.train.checkpoint import CheckpointError
from pipeline.train.pretrain_f import PretrainError, pretrain_f
from pipeline.train.runtime import torchrun_env


def main(given: Params | None = None) -> None:
    """Run the stage with params.yaml, or with `given` params (`i2c` passes its -S overrides).

    Launch it with `torchrun --nproc_per_node N -m stages.pretrain_f` for DDP; rank 0 writes the outputs.
    """
    run_log = RunLog("pretrain_f")

    def body() -> None:
        params = given or load_params()
        section = params.pretrain_f
        if torchrun_env()[0] == 0:
            run_log.path = Path(section.run_log)
        result = pretrain_f(params)
        run_log.work = result.run
        if torchrun_env()[0] != 0:
            return
        metrics = result.metrics
        write_metrics(section.metrics, metrics)
        write_metrics(section.details, result.details)
        print(
            f"pretrain_f: test top-1 {metrics['test_top1']:.3f} (chance {metrics['chance_top1']:.3f}), top-5 "
            f"{metrics['test_top5']:.3f} (chance {metrics['chance_top5']:.3f}) on {metrics['test_images']} photos of "
            f"{metrics['identities']} identities; f saved to {section.model}"
        )

    run_stage("pretrain_f", body, expected=(PretrainError, CheckpointError, ShardError), run_log=run_log)


if __name__ == "__main__":
    main()
