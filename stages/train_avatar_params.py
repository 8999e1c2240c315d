"""DVC stage `train_avatar_params`: avatar API parameters from f, judged on held-out people; the engine draws them."""

from __future__ import annotations

from pipeline.core.params import Params
from pipeline.train.skeleton import stage_main
from pipeline.train.train_avatar_params import TrainAvatarParams


def main(given: Params | None = None) -> None:
    """Run the stage with params.yaml, or with `given` params (`i2c` passes its -S overrides)."""
    stage_main(TrainAvatarParams, given)


if __name__ == "__main__":
    main()
