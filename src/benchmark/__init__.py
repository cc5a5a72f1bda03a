"""Pieces of `python -m src.bench`: the seed-style loop, measurements, and the comparison table."""
