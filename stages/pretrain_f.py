"""DVC stage `pretrain_f`: the VGG-16-D identity classifier on the face shards; its penultimate layer is f."""

from __future__ import annotations

from pipeline.core.params import Params, load_params
from pipeline.core.runner import run_stage, write_metrics
from pipeline.dataset.loader import ShardError
from pipeline.train.checkpoint import CheckpointError
from pipeline.train.pretrain_f import PretrainError, pretrain_f
from pipeline.train.runtime import torchrun_env


def main(given: Params | None = None) -> None:
    """Run the stage with params.yaml, or with `given` params (`i2c` passes its -S overrides).

    Launch it with `torchrun --nproc_per_node N -m stages.pretrain_f` for DDP; rank 0 writes the outputs.
    """

    def body() -> None:
        params = given or load_params()
        metrics = pretrain_f(params)
        if torchrun_env()[0] != 0:
            return
        write_metrics(params.pretrain_f.metrics, metrics)
        print(
            f"pretrain_f: test top-1 {metrics['test_top1']:.3f} (chance {metrics['chance_top1']:.3f}), top-5 "
            f"{metrics['test_top5']:.3f} (chance {metrics['chance_top5']:.3f}) on {metrics['test_images']} photos of "
            f"{metrics['identities']} identities; f saved to {params.pretrain_f.model}"
        )

    run_stage("pretrain_f", body, expected=(PretrainError, CheckpointError, ShardError))


if __name__ == "__main__":
    main()
