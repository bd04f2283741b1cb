"""DEL's statistics and decisions (arXiv 2504.05598; official `hoenza/DEL`, `self_speculation/DEL.py`):
per candidate exit, decayed counts of how often its "shadow token" (the token an exit there would have
drafted) matched the full model's, the TPL rule that picks the next exit and draft length from them,
and the confidence threshold τ that stops drafting.

    M[ℓ] ← ω·M[ℓ] + [Σ valid·match, Σ valid·¬match]          (ω = 0.95: about 20 rounds of memory)
    C[ℓ] ← ω·C[ℓ] + [Σ valid·match·conf, Σ valid·¬match·conf]
    α_ℓ  = M[ℓ,0] / (M[ℓ,0] + M[ℓ,1])                         the exit's teacher-forced agreement
    TPL(ℓ, d) = (1 + α_ℓ + … + α_ℓ^d) / (L + h + d·(ℓ + h))    tokens per layer of a round with d drafts
                (or per plain step, with a measured cost table: round_cost.py)
    (E, d*) = argmax TPL over (ℓ, d ∈ 0..γ_max−1)             first maximum: smallest ℓ, then smallest d
    τ_E  = ½(C[E,0]/M[E,0] + C[E,1]/M[E,1])                   mean matched and mean mismatched confidence

h is the LM head's cost in layers (0 in the official cost model, which counts layers only). A column
is valid up to and including the first mismatch at the current exit (later columns are conditioned on
a rejected draft) — the clipping — and only where the verified block had a real position.

Everything here is a few [m]-sized vector ops on device; batches pool their rows into one M and C
(one exit per batch, as the official code has batch 1)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ExitStats:
    counts: jax.Array  # f32[m, 2] decayed [matched, mismatched] shadow tokens per candidate exit
    conf: jax.Array  # f32[m, 2] decayed confidence sums of the same

    @staticmethod
    def zeros(m: int) -> "ExitStats":
        return ExitStats(jnp.zeros((m, 2), jnp.float32), jnp.zeros((m, 2), jnp.float32))


def valid_columns(match_at_exit: jax.Array, real: jax.Array, clip) -> jax.Array:
    """bool[B, T]: the real columns up to and including the first mismatch at the current exit
    (match_at_exit, real: bool[B, T]); with `clip` False (traced or static) every real column."""
    t = jnp.arange(real.shape[1])[None]
    miss = real & ~match_at_exit
    first = jnp.where(jnp.any(miss, axis=1), jnp.argmax(miss, axis=1), real.shape[1])  # [B]
    return real & ((t <= first[:, None]) | ~jnp.asarray(clip))


def update(stats: ExitStats, match: jax.Array, conf: jax.Array, valid: jax.Array, omega: float) -> ExitStats:
    """Decay every exit, then add the valid columns: match bool[B, T, m], conf f32[B, T, m], valid
    bool[B, T] (every exit) or bool[B, T, m] (per exit: a probe observes some exits only); rows pooled."""
    v = (valid if valid.ndim == 3 else valid[..., None]).astype(jnp.float32)
    hit = match.astype(jnp.float32)
    add_counts = jnp.stack([jnp.sum(v * hit, (0, 1)), jnp.sum(v * (1 - hit), (0, 1))], axis=1)  # [m, 2]
    add_conf = jnp.stack([jnp.sum(v * hit * conf, (0, 1)), jnp.sum(v * (1 - hit) * conf, (0, 1))], axis=1)
    return ExitStats(omega * stats.counts + add_counts, omega * stats.conf + add_conf)


def acceptance(stats: ExitStats) -> jax.Array:
    """α f32[m]: decayed agreement of each exit with the full model (NaN before any observation)."""
    return stats.counts[:, 0] / (stats.counts[:, 0] + stats.counts[:, 1])


def layer_costs(exits: tuple[int, ...], num_layers: int, gamma_max: int, head_cost: float = 0.0) -> np.ndarray:
    """f32[m, gamma_max]: the official cost model, in layers — a round with d drafts at exit ℓ costs
    L + h + d·(ℓ + h) (h: the LM head in layers, 0 officially). `round_cost.RoundCost.matrix` is the
    measured alternative (in plain decoding steps); TPL's argmax only needs the ratios."""
    d = np.arange(gamma_max, dtype=np.float32)[None]
    layers = np.asarray(exits, np.float32)[:, None]
    return (num_layers + head_cost + d * (layers + head_cost)).astype(np.float32)


def tpl_table(alpha: jax.Array, cost) -> jax.Array:
    """f32[m, gamma_max]: TPL(ℓ, d) = Σ_{j<=d} α_ℓ^j / cost[ℓ, d] for d = 0..gamma_max−1 drafts (cost: a
    layer_costs / RoundCost.matrix table); −inf for an exit without statistics. Σ α^j by the official
    recurrence g_d = 1 + α·g_{d−1} (no division by 1 − α)."""
    cost = jnp.asarray(cost, jnp.float32)
    gamma_max = cost.shape[1]
    a = jnp.where(jnp.isnan(alpha), 0.0, alpha)[:, None]
    g = jnp.cumprod(jnp.concatenate([jnp.ones_like(a), jnp.broadcast_to(a, (a.shape[0], gamma_max - 1))], 1), 1)
    g = jnp.cumsum(g, axis=1)  # Σ_{j=0..d} α^j  (== the recurrence)
    return jnp.where(jnp.isnan(alpha)[:, None], -jnp.inf, g / cost)


def choose(stats: ExitStats, cost):
    """(exit index i32, d* i32): the TPL argmax over the cost table f32[m, gamma_max], first maximum in
    [exit, d] order as torch.argmax."""
    table = tpl_table(acceptance(stats), cost)
    gamma_max = table.shape[1]
    flat = jnp.argmax(table.reshape(-1)).astype(jnp.int32)
    return flat // gamma_max, flat % gamma_max


def probe_pick(stats: ExitStats, cost, k: int) -> jax.Array:
    """i32[k] (ascending): the exits a probe observes when it cannot afford all m — those with the best
    TPL at an optimistic α⁺ = (matched + 1) / (observed + 1), over d >= 1 drafts. An exit that has
    agreed well, or that few (decayed) observations back, ranks high; one seen to disagree often ranks
    low until the decay of its counts — every stats update decays all exits — makes it worth another
    look. The exits TPL could choose next are the ones observed; the others keep their α."""
    n = stats.counts.sum(1)
    table = tpl_table((stats.counts[:, 0] + 1) / (n + 1), cost)
    score = jnp.max(table[:, 1:] if table.shape[1] > 1 else table, axis=1)
    return jnp.sort(jax.lax.top_k(score, k)[1]).astype(jnp.int32)


def can_pay(cost) -> np.ndarray:
    """bool[m]: whether an exit can beat plain decoding at all — TPL(ℓ, d) at α = 1, (d + 1)/cost[ℓ, d],
    above a plain step's 1/cost[ℓ, 0] for some d >= 1. Under the layer model every exit below L can; under
    measured costs an exit whose draft forward plus the wider verification cost more than the tokens
    they could bring never will, whatever its statistics say."""
    cost = np.asarray(cost, np.float64)
    d = np.arange(cost.shape[1])[None]
    return np.any((d[:, 1:] + 1) / cost[:, 1:] > 1 / cost[:, :1], axis=1)


def threshold(stats: ExitStats, idx: jax.Array, faithful: bool) -> jax.Array:
    """τ at exit `idx`: halfway between its mean matched and mean mismatched confidence. Faithful: NaN
    while either class is empty (the official code then never stops drafting). Otherwise an empty class
    takes its extreme — matched 1, mismatched 0 — so τ is half the matched mean when the exit has not
    missed yet, and ½ before any statistics."""
    n, c = stats.counts[idx], stats.conf[idx]
    mean = c / n  # NaN where a count is 0
    if faithful:
        return 0.5 * (mean[0] + mean[1])
    return 0.5 * (jnp.where(n[0] > 0, mean[0], 1.0) + jnp.where(n[1] > 0, mean[1], 0.0))
