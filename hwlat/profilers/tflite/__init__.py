"""Building .tflite models (FlatBuffers) and the int8 reference arithmetic, shared by LiteRT, TFLM and boards."""
