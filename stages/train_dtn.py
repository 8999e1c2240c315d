"""DVC stage `train_dtn`: the Domain Transfer Network photo -> emoji over f, evaluated by retrieval and traits."""

from __future__ import annotations

from typing import Any

from pipeline.core.params import DtnParams, Params
from pipeline.dataset.loader import ShardError
from pipeline.train.checkpoint import CheckpointError
from pipeline.train.stage import run_training_stage
from pipeline.train.train_dtn import DtnError, train_dtn


def summary(metrics: dict[str, Any], section: DtnParams) -> str:
    traits = (
        f"{metrics['traits_above_chance_15pts']} of {metrics['traits_compared']} traits >= 15 points above chance "
        f"(f itself carries {metrics['f_traits_above_chance_15pts']} from avatars to photos)"
        if metrics["traits_compared"]
        else "no trait ground truth for these photos"
    )
    return (
        f"train_dtn: test L_CONST {metrics['test_const']:.4f}, L_TID {metrics['test_tid']:.4f}; median rank "
        f"{metrics['median_rank']:g} of {metrics['gallery']} (chance {metrics['chance_rank']:g}); identity "
        f"top-1 {metrics['identity_top1']:.3f} (chance {metrics['chance_top1']:.3f}); {traits}; "
        f"g saved to {section.model}"
    )


def main(given: Params | None = None) -> None:
    """Run the stage with params.yaml, or with `given` params (`i2c` passes its -S overrides)."""
    run_training_stage(
        "train_dtn",
        given,
        lambda p: p.dtn,
        train_dtn,
        summary,
        (DtnError, CheckpointError, ShardError, FileNotFoundError),
    )


if __name__ == "__main__":
    main()
