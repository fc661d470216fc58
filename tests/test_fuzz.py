"""Every loader and the CLI's parsers, fuzzed (tests/fuzzers.py): a valid result or one typed error,
never a traceback, never a changed file. `benchmarks/fuzz.py` runs the same fuzzers at scale."""

from __future__ import annotations

import pytest

from fuzzers import FUZZERS, Counter

EXAMPLES = 40


@pytest.mark.parametrize("name", list(FUZZERS))
def test_fuzzed_input_gives_a_result_or_one_typed_error(name):
    counter = Counter()
    FUZZERS[name](counter, EXAMPLES)
    assert counter.tried >= EXAMPLES // 2
