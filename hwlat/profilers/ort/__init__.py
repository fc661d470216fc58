"""ONNX Runtime on CPU or a GPU provider."""
