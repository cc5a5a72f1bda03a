"""Promptable segmentation with SAM2: prompts, losses, metrics, the predictor, evaluation protocols."""
