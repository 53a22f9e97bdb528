"""Files in and out: weights (ours, PyTorch, ONNX), arrays, and outputs written whole."""
