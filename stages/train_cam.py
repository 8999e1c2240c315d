"""DVC stage `train_cam`: VGG-GAP on the uncropped photos (identity labels only), its CAM boxes against Haar's.

Launch it with `torchrun --nproc_per_node N -m stages.train_cam` for DDP; rank 0 writes the outputs.
"""

from __future__ import annotations

from pipeline.core.params import Params
from pipeline.train.skeleton import stage_main
from pipeline.train.train_cam import TrainCam


def main(given: Params | None = None) -> None:
    """Run the stage with params.yaml, or with `given` params (`i2c` passes its -S overrides)."""
    stage_main(TrainCam, given)


if __name__ == "__main__":
    main()
