"""The one best-of-N wall-clock timer every measurement here uses (bandwidth, step costs, layout and
attention microbenchmarks).

Best, not mean: on a shared CPU box the minimum over repeats is the run least disturbed by other work,
and the first call (compilation, first-touch page faults) is never counted.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any, Callable

import jax


def best_time(fn: Callable[..., Any], *args: Any, repeats: int = 5) -> float:
    """Seconds of the fastest of `repeats` calls `fn(*args)`, each waited for with `block_until_ready`,
    after one untimed warm-up call."""
    return best_times({0: (fn, *args)}, repeats)[0]


def best_times(calls: dict[Any, tuple], repeats: int = 5) -> dict[Any, float]:
    """Seconds of the fastest of `repeats` calls of each `(fn, *args)` in `calls`, interleaved: one untimed
    warm-up call of each, then `repeats` rounds that time every call once, in an order rotated from round
    to round. A slow spell of a shared box then hits every call alike (and the minimum skips it) instead
    of all the repeats of one call — what ratios between the calls need."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    keys = list(calls)
    for k in keys:
        fn, *args = calls[k]
        jax.block_until_ready(fn(*args))
    best = dict.fromkeys(keys, float("inf"))
    for r in range(repeats):
        shift = r % len(keys) if keys else 0
        for k in keys[shift:] + keys[:shift]:
            fn, *args = calls[k]
            t = perf_counter()
            jax.block_until_ready(fn(*args))
            best[k] = min(best[k], perf_counter() - t)
    return best
