"""Speed benchmark of LUT kernels and whole models against PyTorch, ONNX Runtime and TVM dense: ``python -m benchmarks.speed --help``."""
