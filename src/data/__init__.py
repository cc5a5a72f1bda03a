"""Datasets shared by tasks: the on-disk layout, mask and image files, augmentation, preparation."""
