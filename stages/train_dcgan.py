"""DVC stage `train_dcgan`: the DCGAN of 64 x 64 faces (Adam from the shared `train` section), judged in f's space.

Launch it with `torchrun --nproc_per_node N -m stages.train_dcgan` for DDP; rank 0 writes the outputs.
"""

from __future__ import annotations

from pipeline.core.params import Params
from pipeline.train.skeleton import stage_main
from pipeline.train.train_dcgan import TrainDcgan


def main(given: Params | None = None) -> None:
    """Run the stage with params.yaml, or with `given` params (`i2c` passes its -S overrides)."""
    stage_main(TrainDcgan, given)


if __name__ == "__main__":
    main()
