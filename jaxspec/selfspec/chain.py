"""Confidence-stopped chain drafting ("dynamic draft exiting": Draft&Verify, DEL): each row drafts until
the first token whose draft probability falls below its threshold — that token is kept and verified —
or until the cap. A `lax.while_loop` that ends when every row has stopped, so a round whose rows all
stop early runs no further draft forwards; a stopped row's later nodes are invalid (never accepted,
not counted as drafted). The probability is the one the token was drawn from: the plain softmax when
greedy, the processed (temperature / top-k / top-p) distribution when sampling, as the official code."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from jaxspec.sampling import SamplingConfig
from jaxspec.speculative.tree import TreeShape, add_depth, init_tree, ranked_children


def draft_chain(
    step_fn, carry, lq_root: jax.Array, key, shape: TreeShape, sampling: SamplingConfig, cap, threshold: jax.Array
):
    """A chain (shape.width == 1) of at most `cap` (traced, <= shape.depth) tokens from the root
    distribution lq_root f32[B, V]; `step_fn(carry, token i32[B, 1], d) -> (carry, logq f32[B, 1, V])`
    runs the draft on the depth-(d-1) token. threshold f32[B] (0: never stop early). Returns (carry, Tree)."""
    if shape.width != 1:
        raise ValueError(f"confidence-stopped drafting drafts chains, not trees of width {shape.width}")
    B, V = lq_root.shape
    sampled = not sampling.greedy
    tree = init_tree(B, shape, V if sampled else None)
    if sampled:
        tree = dataclasses.replace(tree, logq=tree.logq.at[:, 0].set(lq_root))
    tok, lq_tok, _ = ranked_children(jax.random.fold_in(key, 1), lq_root[:, None], 1, sampled)  # [B, 1, 1]
    tok, lq_tok = tok[:, 0, 0], lq_tok[:, 0, 0]
    tree = add_depth(
        tree, jnp.int32(1), tok[:, None], jnp.full((B, 1), -1, jnp.int32), jnp.isfinite(lq_tok)[:, None], shape
    )
    drafting = jnp.exp(lq_tok) >= threshold  # rows that go on after depth 1

    def cond(s):
        d, _, _, _, drafting = s
        return (d <= cap) & jnp.any(drafting)

    def body(s):  # feeds the depth-(d-1) token, adds depth d
        d, tree, carry, tok, drafting = s
        carry, lq = step_fn(carry, tok[:, None], d)  # [B, 1, V]
        if sampled:
            tree = dataclasses.replace(tree, logq=lax.dynamic_update_slice_in_dim(tree.logq, lq, d - 1, 1))
        t, lq_t, _ = ranked_children(jax.random.fold_in(key, d), lq, 1, sampled)
        t, lq_t = t[:, 0, 0], lq_t[:, 0, 0]
        tree = add_depth(
            tree, d, t[:, None], jnp.full((B, 1), d - 2, jnp.int32), (drafting & jnp.isfinite(lq_t))[:, None], shape
        )
        return d + 1, tree, carry, t, drafting & (jnp.exp(lq_t) >= threshold)

    _, tree, carry, _, _ = lax.while_loop(cond, body, (jnp.int32(2), tree, carry, tok, drafting))
    return carry, tree
