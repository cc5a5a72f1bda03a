"""Benchmarks: speed of training against the seed loop, panel extraction quality; each prints a table."""
