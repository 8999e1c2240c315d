"""DVC stage `crawl_avatars`: sample avatar trait combinations and fetch their renders (sandbox by default)."""

from __future__ import annotations

import sys

from pipeline.core.params import Params, load_params
from pipeline.core.runner import run_stage, write_metrics
from pipeline.crawl.avatars import CrawlError, crawl_avatars


def main(given: Params | None = None) -> None:
    """Run the stage with params.yaml, or with `given` params (the `i2c` commands pass their -S overrides)."""

    def body() -> None:
        params = given or load_params()
        cfg = params.crawl.avatars
        report = crawl_avatars(cfg, params.sandbox, progress=sys.stderr.isatty())
        write_metrics(cfg.metrics, report.metrics())
        print(
            f"crawl_avatars: {report.saved}/{report.requested} saved ({report.resumed} resumed), "
            f"{report.failed} failed {report.failed_by_reason}, {report.metrics()['avatars_per_s']} avatars/s"
        )

    run_stage("crawl_avatars", body, expected=(CrawlError,))


if __name__ == "__main__":
    main()
