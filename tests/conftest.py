import os

# Single-threaded math libraries keep tests predictable on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
