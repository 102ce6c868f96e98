"""T-MAC exact kernel speed against ONNX Runtime (int8 dynamic/static, MatMulNBits, fp32), one thread."""
