"""The training engine: the loop, checkpoints, optimizers, schedules, stop signals, timing, sampling."""
