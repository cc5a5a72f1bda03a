"""Training speed against the seed-001 loop (`python -m src.bench`): the loop, measurements, the table."""
