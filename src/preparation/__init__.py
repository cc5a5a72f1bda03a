"""Preparing datasets from their real sources into the shared on-disk layout (`python -m src.prepare`)."""
