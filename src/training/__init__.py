"""The task-agnostic training loop and its parts: schedules, optimizers, checkpoints."""
