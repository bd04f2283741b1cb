"""Acceptance statistics, accumulated on device per row and summarised on the host.

Definitions (vLLM's, and EasySpec's α):
  rounds                one draft → verify cycle of a live row;
  drafted               draft tokens offered for verification: the chain length k (a tree counts its
                        depth D: at most D of its nodes can be accepted in a round);
  accepted              draft tokens accepted (the extra correction/bonus token is not counted);
  acceptance_rate       accepted / drafted;
  mean_accepted_length  1 + accepted / rounds — tokens emitted per round, the extra token included;
  per_position          fraction of rounds whose draft at depth i (1-based) was accepted;
  histogram             histogram[n] = rounds that accepted exactly n drafts."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.distributed import to_host


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SpecStats:
    rounds: jax.Array  # i32[B]
    drafted: jax.Array  # i32[B]
    accepted: jax.Array  # i32[B]
    histogram: jax.Array  # i32[B, D+1]
    at_depth: jax.Array  # i32[B, D]  rounds whose depth-(i+1) draft was accepted

    @staticmethod
    def zeros(batch: int, depth: int) -> "SpecStats":
        z = lambda *s: jnp.zeros(s, jnp.int32)  # noqa: E731
        return SpecStats(z(batch), z(batch), z(batch), z(batch, depth + 1), z(batch, depth))

    def update(self, live: jax.Array, n: jax.Array, drafted: jax.Array) -> "SpecStats":
        """One round: live bool[B] rows that ran it, n i32[B] accepted drafts, drafted i32[] or i32[B]."""
        one = live.astype(jnp.int32)
        D = self.at_depth.shape[1]
        return SpecStats(
            self.rounds + one,
            self.drafted + one * drafted,
            self.accepted + one * n,
            self.histogram + one[:, None] * jax.nn.one_hot(n, D + 1, dtype=jnp.int32),
            self.at_depth + one[:, None] * (jnp.arange(D)[None] < n[:, None]),
        )


def summarize(stats: SpecStats, rows: list[int] | None = None) -> dict:
    """Host-side summary over the given rows (default all): the counts and the derived rates."""
    s = to_host(stats)
    idx = np.arange(s.rounds.shape[0]) if rows is None else np.asarray(rows)
    rounds, drafted, accepted = (int(x[idx].sum()) for x in (s.rounds, s.drafted, s.accepted))
    at_depth = s.at_depth[idx].sum(0)
    return {
        "rounds": rounds,
        "drafted": drafted,
        "accepted": accepted,
        "acceptance_rate": accepted / drafted if drafted else None,
        "mean_accepted_length": 1 + accepted / rounds if rounds else None,
        "per_position": (at_depth / rounds).tolist() if rounds else None,
        "histogram": s.histogram[idx].sum(0).tolist(),
    }


def merge(summaries: list[dict]) -> dict:
    """Combine per-run summaries (e.g. one per prompt) into one, recomputing the rates from the counts."""
    rounds = sum(x["rounds"] for x in summaries)
    drafted = sum(x["drafted"] for x in summaries)
    accepted = sum(x["accepted"] for x in summaries)
    width = max(len(x["histogram"]) for x in summaries)
    hist = np.zeros(width, np.int64)
    depth_hits = np.zeros(width - 1)
    for x in summaries:
        hist[: len(x["histogram"])] += x["histogram"]
        if x["per_position"]:
            depth_hits[: len(x["per_position"])] += np.asarray(x["per_position"]) * x["rounds"]
    return {
        "rounds": rounds,
        "drafted": drafted,
        "accepted": accepted,
        "acceptance_rate": accepted / drafted if drafted else None,
        "mean_accepted_length": 1 + accepted / rounds if rounds else None,
        "per_position": (depth_hits / rounds).tolist() if rounds else None,
        "histogram": hist.tolist(),
    }
