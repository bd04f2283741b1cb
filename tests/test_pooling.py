"""Pooled tok/s (all tokens over all seconds) and the paired bootstrap interval of a speedup."""

import pytest

from jaxspec.pooling import pooled, speedup_intervals, totals


def rows(pairs):
    return [{"new_tokens": n, "prefill_s": 0.5, "decode_s": d} for n, d in pairs]


def test_totals_pool_tokens_over_seconds_not_per_prompt_rates():
    t = totals(rows([(10, 1.5), (100, 9.5)]))
    assert t["tok_per_s"] == pytest.approx(110 / 12.0)  # a mean of rates would be (10/2 + 100/10) / 2 = 7.5
    assert t["decode_tok_per_s"] == pytest.approx(108 / 11.0) and t["prompts"] == 2


def test_speedup_interval_brackets_the_pooled_speedup_and_pairs_prompts():
    base = rows([(40, 4.0), (40, 8.0), (40, 2.0), (40, 6.0), (40, 5.0)])
    fast = rows([(40, 2.0), (40, 4.5), (40, 0.9), (40, 3.2), (40, 2.4)])  # about 2x on every prompt
    p = pooled(fast, base)
    lo, hi = p["speedup_ci"]
    assert lo <= p["speedup"] <= hi and 1.5 < lo and hi < 2.4
    assert p["decode_speedup_ci"][0] <= p["decode_speedup"] <= p["decode_speedup_ci"][1]
    # paired: one prompt 2x faster and one 2x slower pool to a wide interval around 1
    wide = speedup_intervals(rows([(40, 1.0), (40, 8.0)]), rows([(40, 2.0), (40, 4.0)]))["speedup_ci"]
    assert wide[0] < 0.75 and wide[1] > 1.3
    assert speedup_intervals(fast[:1], base[:1]) == {"speedup_ci": None, "decode_speedup_ci": None}
    with pytest.raises(ValueError, match="pairs prompts"):
        speedup_intervals(fast, base[:3])
