"""DVC stage `crawl_faces`: photos of named people via icrawler (the sandbox search by default)."""

from __future__ import annotations

import sys

from pipeline.core.params import Params, load_params
from pipeline.core.runner import run_stage, write_metrics
from pipeline.crawl.faces import FaceCrawlError, crawl_faces


def main(given: Params | None = None) -> None:
    """Run the stage with params.yaml, or with `given` params (the `i2c` commands pass their -S overrides)."""

    def body() -> None:
        params = given or load_params()
        cfg = params.crawl.faces
        report = crawl_faces(cfg, params.sandbox, progress=sys.stderr.isatty())
        write_metrics(cfg.metrics, report.metrics())
        print(
            f"crawl_faces: {report.saved} saved of {report.candidates} candidates for {report.identities} identities"
            f" ({report.resumed} resumed); rejected {report.rejected_by_reason or 'none'}; "
            f"{len(report.short_identities)} below min_per_identity"
        )

    run_stage("crawl_faces", body, expected=(FaceCrawlError,))


if __name__ == "__main__":
    main()
