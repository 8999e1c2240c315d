"""DVC stage `train_dcgan`: the DCGAN of 64 x 64 faces (Adam from the shared `train` section), judged in f's space."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.params import Params, load_params
from pipeline.core.runner import RunLog, run_stage, write_metrics
from pipeline.dataset.loader import ShardError
from pipeline.evaluate.frechet import InceptionError
from pipeline.train.checkpoint import CheckpointError
from pipeline.train.pretrain_f import PretrainError
from pipeline.train.runtime import torchrun_env
from pipeline.train.train_dcgan import DcganError, train_dcgan


def main(given: Params | None = None) -> None:
    """Run the stage with params.yaml, or with `given` params.

    Launch it with `torchrun --nproc_per_node N -m stages.train_dcgan` for DDP; rank 0 writes the outputs.
    """
    run_log = RunLog("train_dcgan")

    def body() -> None:
        params = given or load_params()
        section = params.dcgan
        if torchrun_env()[0] == 0:
            run_log.path = Path(section.run_log)
        result = train_dcgan(params)
        run_log.work = result.run
        if torchrun_env()[0] != 0:
            return
        metrics = result.metrics
        write_metrics(section.metrics, metrics)
        print(
            f"train_dcgan: fd_f {metrics['fd_f']:.4f} (real-vs-real floor {metrics['fd_f_floor']:.4f}, ratio "
            f"{metrics['fd_f_ratio']}), diversity generated/real {metrics['diversity_ratio']:.3f}, on "
            f"{metrics['samples']} generated and {metrics['samples']} real views of {metrics['real_faces']} faces; "
            f"G saved to {section.model}"
        )

    expected = (DcganError, PretrainError, CheckpointError, ShardError, InceptionError, FileNotFoundError)
    run_stage("train_dcgan", body, expected=expected, run_log=run_log)


if __name__ == "__main__":
    main()
