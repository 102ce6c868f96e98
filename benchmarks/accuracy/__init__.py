"""Accuracy benchmark of LUT-NN on real data: ``python -m benchmarks.accuracy --help``."""
