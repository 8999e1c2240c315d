"""DVC stage `report`: one static HTML page of the whole pipeline, and every stage's metrics in one flat file."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.params import Params, load_params
from pipeline.core.runner import run_stage
from pipeline.report.build import build_report


def main(given: Params | None = None) -> None:
    """Run the stage with params.yaml, or with `given` params (the `i2c report` command passes its -S overrides)."""

    def body() -> None:
        params = given or load_params()
        result = build_report(params)
        print(
            f"report: {result['stages']} stages, {result['metrics']} metrics in {params.report.summary}, "
            f"a {result['page_bytes'] / 1e6:.1f} MB page compared with {result['baseline']}"
        )
        print(f"report: open {Path(params.report.out).resolve()} in a browser; `i2c results` prints its headline table")

    run_stage("report", body)


if __name__ == "__main__":
    main()
