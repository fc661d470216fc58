"""Argparse types of the numbers every command takes: each refuses a bad value at parse time with
argparse's usage line and one error naming the option and what it needs (exit 2), so no command
starts work on a count of -3, a budget of inf or a port of 0."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def _whole(text: str, low: int, high: float, need: str) -> int:
    """`text` as an int in [low, high]; else the error saying it `need`s."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; needs {need}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{value}: needs {need}")
    return value


def _number(text: str, ok: Callable[[float], bool], need: str) -> float:
    """`text` as a finite float for which `ok` holds (inf and nan never do); else the error saying it `need`s."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; needs {need}") from None
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"{text}: needs {need}")
    return value


def positive_int(text: str) -> int:
    """A count of at least 1 (threads, runs, architectures, a budget of evaluations)."""
    return _whole(text, 1, math.inf, "at least 1")


def nonnegative_int(text: str) -> int:
    """A count where 0 means something (none, all, or the default)."""
    return _whole(text, 0, math.inf, "0 or more")


def random_seed(text: str) -> int:
    """A seed of the random generators: any whole number of 0 or more (numpy's take no negative seed)."""
    return _whole(text, 0, math.inf, "a seed of 0 or more")


def port(text: str) -> int:
    """A TCP port, 1..65535."""
    return _whole(text, 1, 65535, "a port between 1 and 65535")


def positive_float(text: str) -> float:
    """A finite number above 0 (a latency budget in ms, minutes, seconds)."""
    return _number(text, lambda v: v > 0, "a finite number above 0")


def nonnegative_float(text: str) -> float:
    """A finite number of 0 or more (a lower latency bound)."""
    return _number(text, lambda v: v >= 0, "a finite number of 0 or more")


def fraction_below_half(text: str) -> float:
    """A share in [0, 0.5) (e.g. of the fastest and of the slowest architectures dropped)."""
    return _number(text, lambda v: 0 <= v < 0.5, "a fraction of at least 0 and below 0.5")


def percentile(text: str) -> float:
    """A percentile strictly between 0 and 100."""
    return _number(text, lambda v: 0 < v < 100, "a percentile above 0 and below 100")
