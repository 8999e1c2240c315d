"""DVC stage `crawl_faces`: photos of named people via icrawler (the sandbox search by default)."""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.core.params import Params, load_params
from pipeline.core.runner import RunLog, run_stage, write_metrics
from pipeline.crawl.faces import FaceCrawlError, crawl_faces


def main(given: Params | None = None) -> None:
    """Run the stage with params.yaml, or with `given` params (the `i2c` commands pass their -S overrides)."""
    run_log = RunLog("crawl_faces")

    def body() -> None:
        params = given or load_params()
        cfg = params.crawl.faces
        run_log.path = Path(cfg.run_log)
        report = crawl_faces(cfg, params.sandbox, progress=sys.stderr.isatty(), work=run_log.work)
        write_metrics(cfg.metrics, report.metrics())
        write_metrics(cfg.details, report.details())
        work, details = run_log.work, report.details()
        print(
            f"crawl_faces: {report.kept} kept of {details['candidates']} candidates for {len(report.names)} "
            f"identities ({work['reused']} reused, {work['rederived']} re-validated, {work['fetched']} fetched); "
            f"rejected {details['rejected_by_reason'] or 'none'}; {len(report.short_identities)} below min_per_identity"
        )
        print(f"crawl_faces: photos in {cfg.out_dir}/, manifest {cfg.manifest}, metrics in {cfg.metrics}")

    run_stage("crawl_faces", body, expected=(FaceCrawlError,), run_log=run_log)


if __name__ == "__main__":
    main()
