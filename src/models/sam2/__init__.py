"""SAM2: built from its packaged configs, its weight sources, a trainable wrapper and the embedding cache."""
