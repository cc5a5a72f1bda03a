"""Tracking: MLflow runs and tags, sweeps, and where `checkpoint=` weights come from."""
