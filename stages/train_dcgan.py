"""DVC stage `train_dcgan`: the DCGAN of 64 x 64 faces (Adam from the shared `train` section), judged in f's space."""

from __future__ import annotations

from typing import Any

from pipeline.core.params import DcganParams, Params
from pipeline.dataset.loader import ShardError
from pipeline.evaluate.frechet import InceptionError
from pipeline.train.checkpoint import CheckpointError
from pipeline.train.pretrain_f import PretrainError
from pipeline.train.stage import run_training_stage
from pipeline.train.train_dcgan import DcganError, train_dcgan


def summary(metrics: dict[str, Any], section: DcganParams) -> str:
    return (
        f"train_dcgan: fd_f {metrics['fd_f']:.4f} (real-vs-real floor {metrics['fd_f_floor']:.4f}, ratio "
        f"{metrics['fd_f_ratio']}), diversity generated/real {metrics['diversity_ratio']:.3f}, on "
        f"{metrics['samples']} generated and {metrics['samples']} real views of {metrics['real_faces']} faces; "
        f"G saved to {section.model}"
    )


def main(given: Params | None = None) -> None:
    """Run the stage with params.yaml, or with `given` params.

    Launch it with `torchrun --nproc_per_node N -m stages.train_dcgan` for DDP; rank 0 writes the outputs.
    """
    expected = (DcganError, PretrainError, CheckpointError, ShardError, InceptionError, FileNotFoundError)
    run_training_stage("train_dcgan", given, lambda p: p.dcgan, train_dcgan, summary, expected)


if __name__ == "__main__":
    main()
