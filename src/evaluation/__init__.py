"""Evaluation of promptable segmentation: prompt protocols, the loop over a split, and its report."""
