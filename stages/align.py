"""DVC stage `align`: Haar-detect and eye-align the crawled faces, and put the avatars on the same template."""

from __future__ import annotations

import sys

from pipeline.core.params import Params, load_params
from pipeline.core.runner import run_stage, write_metrics
from pipeline.faces.align_run import run_align


def main(given: Params | None = None) -> None:
    """Run the stage with params.yaml, or with `given` params (the `i2c` commands pass their -S overrides)."""

    def body() -> None:
        params = given or load_params()
        metrics = run_align(params, progress=sys.stderr.isatty())
        write_metrics(params.align.metrics, metrics)
        for kind, m in metrics.items():
            print(
                f"align {kind}: {m['aligned']}/{m['input']} aligned ({m['detection_rate']:.1%}); "
                f"rejected {m['rejected_by_reason'] or 'none'}"
            )

    run_stage("align", body, expected=(FileNotFoundError,))


if __name__ == "__main__":
    main()
