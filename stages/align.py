"""DVC stage `align`: Haar-detect and eye-align the crawled faces, and put the avatars on the same template."""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.core.params import Params, load_params
from pipeline.core.runner import RunLog, run_stage, write_metrics
from pipeline.faces.align_run import run_align


def main(given: Params | None = None) -> None:
    """Run the stage with params.yaml, or with `given` params (the `i2c` commands pass their -S overrides)."""
    run_log = RunLog("align")

    def body() -> None:
        params = given or load_params()
        run_log.path = Path(params.align.run_log)
        report = run_align(params, progress=sys.stderr.isatty())
        run_log.work.update(report.work())
        write_metrics(params.align.metrics, report.metrics())
        write_metrics(params.align.details, report.details())
        for kind, domain in (("faces", report.faces), ("avatars", report.avatars)):
            print(
                f"align {kind}: {domain.aligned}/{domain.input} aligned ({domain.work['reused']} reused, "
                f"{domain.work['computed']} computed); rejected {domain.details()['rejected_by_reason'] or 'none'}"
            )
        section = params.align
        print(f"align: crops in {section.out_dir}/, sample sheet {section.samples}, metrics in {section.metrics}")

    run_stage("align", body, expected=(FileNotFoundError,), run_log=run_log)


if __name__ == "__main__":
    main()
