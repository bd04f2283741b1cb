"""The shared best-of-N timer (jaxspec.timing): warm-up untimed, the fastest call kept."""

import pytest

from jaxspec import timing


def test_best_time_skips_the_warm_up_and_keeps_the_fastest_call(monkeypatch):
    clock = iter([0.0, 3.0, 10.0, 11.0, 20.0, 22.0])  # (start, end) of the three timed calls: 3, 1, 2 s
    monkeypatch.setattr(timing, "perf_counter", lambda: next(clock))
    calls = []
    assert timing.best_time(calls.append, 7, repeats=3) == 1.0
    assert calls == [7, 7, 7, 7]  # one warm-up call, then three timed ones


def test_best_time_needs_a_repeat():
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        timing.best_time(lambda: None, repeats=0)
