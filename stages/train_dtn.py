"""DVC stage `train_dtn`: the Domain Transfer Network photo -> emoji over f, evaluated by retrieval and traits.

It runs in one process (f is frozen and its embeddings are computed once).
"""

from __future__ import annotations

from pipeline.core.params import Params
from pipeline.train.skeleton import stage_main
from pipeline.train.train_dtn import TrainDtn


def main(given: Params | None = None) -> None:
    """Run the stage with params.yaml, or with `given` params (`i2c` passes its -S overrides)."""
    stage_main(TrainDtn, given)


if __name__ == "__main__":
    main()
