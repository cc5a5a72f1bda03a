"""Small helpers with no project knowledge: atomic files, checkpoints I/O, devices, pictures, seeds."""
