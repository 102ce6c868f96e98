"""LUT lookup kernels at one thread: shuffle lookup vs gather lookup vs torch fp32 matmul.

Run: ``python -m benchmarks.lut_kernel_speed`` from the repository root (see ``run.py``)."""
