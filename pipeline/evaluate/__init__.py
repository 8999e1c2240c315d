"""Metrics shared across models: top-k accuracy, per-class accuracy, confusion counts."""
