"""LiteRT (TFLite) with or without XNNPACK."""
