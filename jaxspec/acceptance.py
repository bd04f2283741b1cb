"""Chain acceptance rules of speculative decoding (lossless), for a batch of rows.

A round drafts k tokens x_1..x_k per row; one target pass scores the prefix plus the k drafts and gives
k + 1 next-token distributions p_0..p_k (p_i is the target's distribution for position i, after the
i-th draft token). Each rule returns, per row, how many drafts are accepted (n in [0, k]) and the one
extra token the round emits (the correction at position n, or the bonus from p_k when all are accepted),
so a round always emits n + 1 tokens.

  * greedy: accept while x_i == argmax p_{i-1}; the extra token is argmax p_n. Output is identical to
    vanilla greedy decoding by construction.
  * sampling (Leviathan et al. / Chen et al.): accept x_i with probability min(1, p(x_i) / q(x_i)), where q
    is *exactly* the processed distribution x_i was drawn from (temperature, top-k, top-p applied to both;
    HF #47932 used the raw draft logits), then resample from norm(max(p - q, 0)) on the first rejection;
    the emitted tokens are distributed as the target's own samples.
Distributions come in as log-probabilities from `jaxspec.sampling.processed_logprobs`."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def accepted_prefix(ok: jax.Array) -> jax.Array:
    """bool[B, k] per-position acceptance → i32[B] length of the all-True prefix."""
    return jnp.sum(jnp.cumprod(ok.astype(jnp.int32), axis=-1), axis=-1).astype(jnp.int32)


def accept_greedy(drafts: jax.Array, target_logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """drafts: i32[B, k]; target_logits: f32[B, k+1, V] → (n_accepted i32[B], extra token i32[B])."""
    best = jnp.argmax(target_logits, axis=-1).astype(jnp.int32)  # [B, k+1]
    n = accepted_prefix(drafts == best[:, :-1])
    return n, jnp.take_along_axis(best, n[:, None], axis=1)[:, 0]


def accept_sampling(key: jax.Array, drafts: jax.Array, draft_logprobs: jax.Array,
                    target_logprobs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Speculative sampling for a chain.

    drafts: i32[B, k] drawn from q; draft_logprobs: f32[B, k, V] = log q_1..q_k (processed);
    target_logprobs: f32[B, k+1, V] = log p_0..p_k (processed). Returns (n_accepted i32[B], extra i32[B])."""
    B, k = drafts.shape
    k_accept, k_extra = jax.random.split(key)
    lp = jnp.take_along_axis(target_logprobs[:, :k], drafts[..., None], axis=-1)[..., 0]  # log p(x_i)  [B, k]
    lq = jnp.take_along_axis(draft_logprobs, drafts[..., None], axis=-1)[..., 0]  # log q(x_i)
    u = jax.random.uniform(k_accept, (B, k))
    n = accepted_prefix(jnp.log(u) < lp - lq)  # u < p/q, in log space (q(x_i) > 0: x_i was drawn from q)

    # the extra token: from norm(max(p_n - q_n, 0)) after a rejection, from p_k when all were accepted
    p_n = jnp.exp(jnp.take_along_axis(target_logprobs, n[:, None, None], axis=1)[:, 0])  # [B, V]
    q_pad = jnp.concatenate([jnp.exp(draft_logprobs), jnp.zeros_like(p_n)[:, None]], axis=1)  # q_{k+1} := 0
    q_n = jnp.take_along_axis(q_pad, n[:, None, None], axis=1)[:, 0]
    residual = jnp.maximum(p_n - q_n, 0.0)
    # p == q exactly leaves no residual mass; rejection then has probability 0, fall back to p
    residual = jnp.where(jnp.sum(residual, -1, keepdims=True) > 0, residual, p_n)
    extra = jax.random.categorical(k_extra, jnp.log(residual), axis=-1).astype(jnp.int32)
    return n, extra
