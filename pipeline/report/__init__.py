"""The `report` stage: one static HTML page of the pipeline, its metrics beside a baseline, curves and samples."""
