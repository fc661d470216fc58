"""TensorFlow Lite Micro's host interpreter."""
