"""DVC stage `pretrain_f`: the VGG-16-D identity classifier on the face shards; its penultimate layer is f."""

from __future__ import annotations

from typing import Any

from pipeline.core.params import Params, PretrainFParams
from pipeline.dataset.loader import ShardError
from pipeline.train.checkpoint import CheckpointError
from pipeline.train.pretrain_f import PretrainError, pretrain_f
from pipeline.train.stage import run_training_stage


def summary(metrics: dict[str, Any], section: PretrainFParams) -> str:
    return (
        f"pretrain_f: test top-1 {metrics['test_top1']:.3f} (chance {metrics['chance_top1']:.3f}), top-5 "
        f"{metrics['test_top5']:.3f} (chance {metrics['chance_top5']:.3f}) on {metrics['test_images']} photos of "
        f"{metrics['identities']} identities; f saved to {section.model}"
    )


def main(given: Params | None = None) -> None:
    """Run the stage with params.yaml, or with `given` params (`i2c` passes its -S overrides).

    Launch it with `torchrun --nproc_per_node N -m stages.pretrain_f` for DDP; rank 0 writes the outputs.
    """
    expected = (PretrainError, CheckpointError, ShardError)
    run_training_stage("pretrain_f", given, lambda p: p.pretrain_f, pretrain_f, summary, expected)


if __name__ == "__main__":
    main()
