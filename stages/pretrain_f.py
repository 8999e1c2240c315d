"""DVC stage `pretrain_f`: the VGG-16-D identity classifier on the face shards; its penultimate layer is f.

Launch it with `torchrun --nproc_per_node N -m stages.pretrain_f` for DDP; rank 0 writes the outputs.
"""

from __future__ import annotations

from pipeline.core.params import Params
from pipeline.train.pretrain_f import PretrainF
from pipeline.train.skeleton import stage_main


def main(given: Params | None = None) -> None:
    """Run the stage with params.yaml, or with `given` params (`i2c` passes its -S overrides)."""
    stage_main(PretrainF, given)


if __name__ == "__main__":
    main()
