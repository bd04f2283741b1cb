"""The shared best-of-N timers (jaxspec.timing): warm-up untimed, the fastest call kept; interleaved."""

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


def test_best_times_interleaves_the_calls_and_keeps_each_ones_fastest(monkeypatch):
    """Warm-up of each, then rounds timing every call once in a rotated order; a slow spell (the first
    round here) costs no call its best time."""
    # (start, end) of the timed calls in order — a, b | b, a | a, b — lasting 9, 8 | 1, 2 | 3, 1.5 s
    clock = iter([0.0, 9.0, 10.0, 18.0, 20.0, 21.0, 30.0, 32.0, 40.0, 43.0, 50.0, 51.5])
    monkeypatch.setattr(timing, "perf_counter", lambda: next(clock))
    seen = []
    got = timing.best_times({"a": (seen.append, "a"), "b": (seen.append, "b")}, repeats=3)
    assert seen == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-ups, then a b | b a | a b
    assert got == {"a": 2.0, "b": 1.0}
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        timing.best_times({"a": (seen.append, 1)}, repeats=0)
