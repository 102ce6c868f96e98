"""Speed of the int8 dense layer against fp32 dense TVM and ONNX Runtime's dynamic int8 (MiniLM shapes)."""
