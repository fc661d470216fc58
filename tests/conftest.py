import os

# Single-threaded math libraries keep tests predictable on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Predictions from a table of this machine predict the table's own times, not this machine's speed now
# (which moves): tests compare numbers across calls. The scaling's own test turns this off.
os.environ.setdefault("HWLAT_AS_PROFILED", "1")
