"""Landmarks (seed 002): heatmap models, the scheme, annotations, NME, prediction and export."""
