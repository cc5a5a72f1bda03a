"""samtune: Hydra-composed fine-tuning of SAM2 for hard domains, tracked in MLflow."""
