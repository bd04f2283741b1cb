"""Per-prompt timings pooled into one number, and the interval it comes with: the one place tokens per
second are summed (bench JSON, experiments/common/interleaved.py and the scripts that pool its rows).

A row is one prompt's run: `new_tokens`, `prefill_s`, `decode_s`. Pooled tok/s is all tokens over all
seconds (not a mean of per-prompt rates: a short answer would weigh as much as a long one); decode tok/s
counts the tokens after each prompt's first (which comes from prefill) over decode seconds. A speedup is
the ratio of two pooled rates over the same prompts; its 95 % interval is a paired bootstrap over
prompts (scipy.stats.bootstrap, percentile method): it says how much the number depends on which prompts
were drawn, not how much the machine drifted between runs (interleave runs for that: interleaved.py)."""

from __future__ import annotations

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000


def totals(rows: list[dict]) -> dict:
    """Tokens and seconds summed over `rows`, and the pooled rates."""
    new = sum(r["new_tokens"] for r in rows)
    prefill_s = sum(r["prefill_s"] for r in rows)
    decode_s = sum(r["decode_s"] for r in rows)
    steps = new - len(rows)  # tokens after the first (which comes from prefill)
    wall = prefill_s + decode_s
    return {
        "prompts": len(rows),
        "new_tokens": new,
        "prefill_s": prefill_s,
        "decode_s": decode_s,
        "wall_s": wall,
        "tok_per_s": new / wall if wall else None,
        "decode_tok_per_s": steps / decode_s if decode_s else None,
    }


def _columns(rows: list[dict]) -> np.ndarray:
    """f64[4, n]: new tokens, decode steps, end-to-end seconds, decode seconds per prompt."""
    return np.array(
        [
            [r["new_tokens"] for r in rows],
            [r["new_tokens"] - 1 for r in rows],
            [r["prefill_s"] + r["decode_s"] for r in rows],
            [r["decode_s"] for r in rows],
        ],
        np.float64,
    )


def speedup_intervals(
    rows: list[dict], base: list[dict], *, confidence: float = CONFIDENCE, n_resamples: int = RESAMPLES, seed: int = 0
) -> dict:
    """Paired bootstrap intervals of the pooled end-to-end and decode speedups of `rows` over `base` (the
    same prompts, in the same order): {"speedup_ci": [lo, hi], "decode_speedup_ci": [lo, hi]}; None
    for fewer than 2 prompts or a degenerate resample (every prompt the same)."""
    if len(rows) != len(base):
        raise ValueError(f"a speedup pairs prompts: {len(rows)} rows against {len(base)} baseline rows")
    if len(rows) < 2:
        return {"speedup_ci": None, "decode_speedup_ci": None}
    from scipy import stats

    a, b = _columns(rows), _columns(base)
    out = {}
    for name, (tok, sec) in (("speedup_ci", (0, 2)), ("decode_speedup_ci", (1, 3))):

        def ratio(i, tok=tok, sec=sec):  # pooled rate of rows[i] over pooled rate of base[i]
            i = i.astype(int)
            return (a[tok, i].sum() / a[sec, i].sum()) / (b[tok, i].sum() / b[sec, i].sum())

        if not (a[sec] > 0).all() or not (b[sec] > 0).all():
            out[name] = None
            continue
        res = stats.bootstrap(
            (np.arange(len(rows), dtype=np.float64),),
            ratio,
            vectorized=False,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
        lo, hi = res.confidence_interval
        out[name] = [float(lo), float(hi)] if np.isfinite(lo) and np.isfinite(hi) else None
    return out


def pooled(rows: list[dict], base: list[dict] | None = None) -> dict:
    """`totals(rows)`; with `base` (the baseline's rows on the same prompts): the speedups, the prefill
    ratio and the speedups' bootstrap intervals."""
    out = totals(rows)
    if base is not None:
        b = totals(base)
        out["speedup"] = out["tok_per_s"] / b["tok_per_s"]
        out["decode_speedup"] = (
            out["decode_tok_per_s"] / b["decode_tok_per_s"]
            if out["decode_tok_per_s"] and b["decode_tok_per_s"]
            else None
        )
        out["prefill_ratio"] = out["prefill_s"] / b["prefill_s"] if b["prefill_s"] else None
        out.update(speedup_intervals(rows, base))
    return out
