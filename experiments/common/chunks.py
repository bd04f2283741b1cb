"""Sweeps that spread over several runs: a prompt set's chunk `SOURCE:OFFSET:N` (prompts [OFFSET, OFFSET + N)),
appended to a result file as each finishes (lookup/cheap_drafts.py, speculative/verify_buckets.py,
speculative/defaults.py: `measure_chunk`), and the held-out sets of hot_vocab/hot_vocab_calibration.py."""

from __future__ import annotations

import time
from typing import Iterable, Iterator

from experiments.common import interleaved
from experiments.common.results import log, provenance

ROW_KEYS = ("prompt_tokens", "new_tokens", "prefill_s", "decode_s", "stats", "drafter")


def chunks(specs: Iterable[str]) -> Iterator[tuple[str, int, int]]:
    """SOURCE:OFFSET:N (or SOURCE:N) -> (source, offset, n)."""
    for spec in specs:
        parts = spec.split(":")
        nums = [p for p in parts[::-1] if p.isdigit()][:2][::-1]
        source = ":".join(parts[: len(parts) - len(nums)])
        yield (source, 0, int(nums[0])) if len(nums) == 1 else (source, int(nums[0]), int(nums[1]))


def compact_row(r: dict, vanilla: dict) -> dict:
    """An interleaved.measure row as a chunk file keeps it: times, statistics and whether the output is
    vanilla's (the output ids themselves are kept once, vanilla's)."""
    out = {k: r[k] for k in ROW_KEYS if k in r}
    out["identical"] = r["output_ids"] == vanilla["output_ids"]
    return out


def measure_chunk(runners: dict, key: tuple[str, int, int], ids, repeats: int, warmed: set, **fields) -> tuple:
    """One prompt set `key` (source, offset, n) measured: its new prompt widths compiled and warmed
    (interleaved.prepare_widths), every runner interleaved prompt by prompt (interleaved.measure), each
    row kept against `runners["vanilla"]`'s (compact_row). Raises when an output differs from vanilla's.
    Returns (the chunk — key, `fields`, environment, command and commit, compile seconds, rows —, the
    full rows with their output ids)."""
    from jaxspec.bench import environment

    source, offset, n = key
    t0 = time.perf_counter()
    compile_s = interleaved.prepare_widths(runners, ids, warmed)
    log(f"[{source} {offset}:{offset + n}] {len(ids)} prompts, compiled in {time.perf_counter() - t0:.0f}s")
    rows = interleaved.measure(runners, ids, repeats, log)
    van = rows["vanilla"]
    chunk = {"source": source, "offset": offset, "n": n, **fields, "env": environment(), **provenance()}
    chunk["compile_s"] = compile_s
    chunk["rows"] = {m: [compact_row(r, v) for r, v in zip(rs, van)] for m, rs in rows.items()}
    for m, rs in chunk["rows"].items():
        if not all(r["identical"] for r in rs):
            raise RuntimeError(f"{source} {m}: an output differs from vanilla's")
    return chunk, rows
