"""DVC stage `crawl_avatars`: sample avatar trait combinations and fetch their renders (sandbox by default)."""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.core.params import Params, load_params
from pipeline.core.runner import RunLog, run_stage, write_metrics
from pipeline.crawl.avatars import CrawlError, crawl_avatars


def main(given: Params | None = None) -> None:
    """Run the stage with params.yaml, or with `given` params (the `i2c` commands pass their -S overrides)."""
    run_log = RunLog("crawl_avatars")

    def body() -> None:
        params = given or load_params()
        cfg = params.crawl.avatars
        run_log.path = Path(cfg.run_log)
        report = crawl_avatars(cfg, params.sandbox, progress=sys.stderr.isatty(), work=run_log.work)
        write_metrics(cfg.metrics, report.metrics())
        write_metrics(cfg.details, report.details())
        work = run_log.work
        print(
            f"crawl_avatars: {report.kept}/{len(report.rows)} kept ({work['reused']} reused, {work['rederived']} "
            f"re-validated, {work['fetched']} fetched); rejected {report.details()['rejected_by_reason'] or 'none'}"
        )
        print(f"crawl_avatars: avatars in {cfg.out_dir}/, manifest {cfg.manifest}, metrics in {cfg.metrics}")

    run_stage("crawl_avatars", body, expected=(CrawlError,), run_log=run_log)


if __name__ == "__main__":
    main()
