"""Shared plumbing: typed params, storage, manifests and reuse, stage runner, image grids."""
