"""LUT-NA benchmark: exact-LUT quantization, mixed precision and lottery-ticket pruning on OpenCV digits."""
