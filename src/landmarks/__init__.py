"""Facial landmarks of animal characters: the scheme, heatmaps, NME, training and annotation parts."""
