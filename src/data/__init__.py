"""Datasets: the on-disk mask layout, the embedded synthetic set, augmentation and batching."""
