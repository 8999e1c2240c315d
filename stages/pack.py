"""DVC stage `pack`: aligned faces, avatars and raw photos -> split, checksummed uint8 shards with index.parquet."""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.core.params import Params, load_params
from pipeline.core.runner import RunLog, run_stage, write_metrics
from pipeline.dataset.shards import PackError, pack, pack_inputs, pack_metrics


def main(given: Params | None = None) -> None:
    """Run the stage with params.yaml, or with `given` params (the `i2c` commands pass their -S overrides)."""
    run_log = RunLog("pack")

    def body() -> None:
        params = given or load_params()
        section = params.pack
        run_log.path = Path(section.run_log)
        metrics = pack(section, pack_inputs(params), progress=sys.stderr.isatty())
        write_metrics(section.metrics, pack_metrics(metrics))
        write_metrics(section.details, metrics)
        print(
            f"pack: {metrics['identities']} identities to train on ({metrics['identities_dropped']} dropped), faces "
            f"{metrics['faces_train']}/{metrics['faces_val']}/{metrics['faces_test']} train/val/test; "
            f"{metrics['people_val']}/{metrics['people_test']} held-out val/test people "
            f"({metrics['faces_people_val']}/{metrics['faces_people_test']} faces); "
            f"{metrics['avatars_total']} avatars, {metrics['bytes'] / 1e6:.1f} MB"
        )
        print(f"pack: shards in {section.out_dir}/, metrics in {section.metrics}")

    run_stage("pack", body, expected=(PackError,), run_log=run_log)


if __name__ == "__main__":
    main()
