"""Model construction: SAM2 built from its packaged configs, its weights, and a trainable wrapper."""
