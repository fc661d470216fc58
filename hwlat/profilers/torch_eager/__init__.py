"""PyTorch eager mode on CPU or CUDA."""
