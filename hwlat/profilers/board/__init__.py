"""Microcontroller boards over the serial protocol (QEMU or real)."""
