"""Several generation methods timed against each other prompt by prompt: for every prompt each method
runs once per repeat, in an order rotated from prompt to prompt and repeat to repeat, and a method's
prefill and decode times on that prompt are the best of its repeats. Slow drift of a shared CPU box
(the same set measured twice in a row differed by up to ±5 %) then hits every method alike, and a
single disturbed run does not count — what a ratio of two separate passes over a set cannot promise.

Used by selfspec/del_selfspec.py, lookup/cheap_drafts.py, speculative/verify_buckets.py and
hot_vocab/hot_vocab.py; compile and warm-up come first and are reported apart (the `bench`
contract). Greedy decoding is deterministic: a method whose repeats disagree is an error."""

from __future__ import annotations

import time
from typing import Callable, Sequence

import jax

from jaxspec.pooling import pooled
from jaxspec.speculative import merge


def prepare(runners: dict, ids: Sequence[Sequence[int]]) -> dict[str, float]:
    """Compile every runner for every prompt's shape and run each executable once (not timed).
    Returns each runner's compile seconds."""
    compile_s = {}
    for name, r in runners.items():
        compile_s[name] = sum(r.compile([i]) for i in ids)
        r.warmup([[i] for i in ids])
    return compile_s


def prepare_widths(runners: dict, ids: Sequence[Sequence[int]], warmed: set) -> dict[str, float]:
    """`prepare` for the prompt widths not warmed yet in this run (the runners share one cache size and keep
    their executables, so a later set compiles and warms only its new prefill widths; `warmed` is updated).
    Returns each runner's compile seconds for this set."""
    new = []
    first = next(iter(runners.values()))
    for i in ids:
        width = first.prompt_shape([i])
        if width not in warmed:
            warmed.add(width)
            new.append(i)
    compile_s = {m: sum(r.compile([i]) for i in new) for m, r in runners.items()}
    for r in runners.values():
        if new:
            r.warmup([[i] for i in new])
    return compile_s


def measure(runners: dict, ids: Sequence[Sequence[int]], repeats: int, log: Callable[[str], None] = print) -> dict:
    """{name: [row per prompt]}: output ids, best prefill_s / decode_s over `repeats`, the run's
    speculative stats and drafter report."""
    names = list(runners)
    rows = {n: [None] * len(ids) for n in names}
    for rep in range(repeats):
        t0 = time.perf_counter()
        for j, pid in enumerate(ids):
            s = (j + rep) % len(names)
            for name in names[s:] + names[:s]:
                res = runners[name].run([pid], jax.random.key(j))
                row = rows[name][j]
                if row is None:
                    row = rows[name][j] = {
                        "prompt_tokens": len(pid),
                        "output_ids": res.output_ids[0],
                        "new_tokens": len(res.output_ids[0]),
                        "prefill_s": float("inf"),
                        "decode_s": float("inf"),
                    }
                    if res.stats is not None:
                        row["stats"] = {k: v for k, v in res.stats.items() if k != "per_row"}
                    if res.drafter:
                        row["drafter"] = res.drafter
                elif row["output_ids"] != res.output_ids[0]:
                    raise RuntimeError(f"{name}: prompt {j} gave another output in repeat {rep}")
                row["prefill_s"] = min(row["prefill_s"], res.prefill_s)
                row["decode_s"] = min(row["decode_s"], res.decode_s)
        log(
            f"  repeat {rep + 1}/{repeats}: {len(ids)} prompts x {len(names)} methods in "
            f"{time.perf_counter() - t0:.0f}s"
        )
    return rows


def summary(rows: list[dict], base: list[dict] | None = None) -> dict:
    """Totals over a method's rows; with `base` (vanilla's rows) the speedups and the identity count."""
    out = pooled(rows, base)  # tokens over seconds; with a base: speedups and their bootstrap intervals
    out.pop("wall_s")
    if rows and "stats" in rows[0]:
        out.update(merge([r["stats"] for r in rows]))
        out["mean_drafted_depth"] = out["drafted"] / out["rounds"] if out["rounds"] else None
    if base is not None:
        out["vanilla_identical"] = sum(r["output_ids"] == v["output_ids"] for r, v in zip(rows, base))
    return out
