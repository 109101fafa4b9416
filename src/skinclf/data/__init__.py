"""Datasets: loaders per format, splits, decode cache, torch Dataset, generated samples."""
