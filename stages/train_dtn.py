"""DVC stage `train_dtn`: the Domain Transfer Network photo -> emoji over f, evaluated by retrieval and traits."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.params import Params, load_params
from pipeline.core.runner import RunLog, run_stage, write_metrics
from pipeline.dataset.loader import ShardError
from pipeline.train.checkpoint import CheckpointError
from pipeline.train.train_dtn import DtnError, train_dtn


def main(given: Params | None = None) -> None:
    """Run the stage with params.yaml, or with `given` params (`i2c` passes its -S overrides)."""
    run_log = RunLog("train_dtn")

    def body() -> None:
        params = given or load_params()
        section = params.dtn
        run_log.path = Path(section.run_log)
        result = train_dtn(params)
        run_log.work = result.run
        metrics = result.metrics
        write_metrics(section.metrics, metrics)
        write_metrics(section.details, result.details)
        traits = (
            f"{metrics['traits_above_chance_15pts']} of {metrics['traits_compared']} traits >= 15 points above chance"
            if metrics["traits_compared"]
            else "no trait ground truth for these photos"
        )
        print(
            f"train_dtn: test L_CONST {metrics['test_const']:.4f}, L_TID {metrics['test_tid']:.4f}; median rank "
            f"{metrics['median_rank']:g} of {metrics['gallery']} (chance {metrics['chance_rank']:g}); identity "
            f"top-1 {metrics['identity_top1']:.3f} (chance {metrics['chance_top1']:.3f}); {traits}; "
            f"g saved to {section.model}"
        )

    run_stage("train_dtn", body, expected=(DtnError, CheckpointError, ShardError, FileNotFoundError), run_log=run_log)


if __name__ == "__main__":
    main()
