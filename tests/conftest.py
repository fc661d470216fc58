import os

# Single-threaded math libraries keep tests predictable on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Predictions from a table of this machine predict the table's own times, not this machine's speed now
# (which moves): tests compare numbers across calls. The scaling's own test turns this off.
os.environ.setdefault("HWLAT_AS_PROFILED", "1")

# A shell's background job (`make test &`, nohup) starts with SIGINT ignored, and the hwlat processes the
# tests interrupt with it inherit that: they ran on to the end. A handler of this process's own is not
# inherited across exec, so they get the default back and Python's KeyboardInterrupt.
import signal  # noqa: E402

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
