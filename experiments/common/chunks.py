"""Sweeps that spread over several runs: a prompt set's chunk `SOURCE:OFFSET:N` (prompts [OFFSET, OFFSET + N)),
appended to a result file as each finishes (lookup/cheap_drafts.py, speculative/verify_buckets.py), and the
held-out sets of hot_vocab/hot_vocab_calibration.py."""

from __future__ import annotations

from typing import Iterable, Iterator

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
