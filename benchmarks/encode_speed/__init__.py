"""Encode kernels at one thread: dense (codebook-lane vs row-vectorized) and conv row encodes.

Run: ``python -m benchmarks.encode_speed`` from the repository root (see ``run.py``)."""
