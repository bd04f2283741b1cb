"""Attention masks over the cache: bool[B, T, S], True where query t may read slot s."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def causal_mask(lengths: jax.Array, T: int, S: int) -> jax.Array:
    """T new tokens written at slots lengths[b] + t: query t sees every slot up to its own.

    lengths: i32[B], the valid slots *before* the new tokens."""
    s = jnp.arange(S)[None, None, :]
    t = jnp.arange(T)[None, :, None]
    return s <= lengths[:, None, None] + t


def tree_mask(lengths: jax.Array, ancestors: jax.Array, S: int) -> jax.Array:
    """Tree nodes in a block of slots starting at lengths[b]: a query sees the committed prefix and the
    block slots of its root-to-node path. ancestors: bool[B, Tq, N] (or [Tq, N]): ancestors[t, u] = block
    node u is query t or one of its ancestors. Square (Tq = N) when the queries are the block itself; a
    draft step feeding one depth of a growing tree passes only that depth's rows."""
    B = lengths.shape[0]
    Tq, N = ancestors.shape[-2:]
    anc = jnp.broadcast_to(ancestors, (B, Tq, N))
    s = jnp.arange(S)[None, None, :]
    rel = s - lengths[:, None, None]  # slot relative to the block's first slot
    in_block = (rel >= 0) & (rel < N)
    block = jnp.take_along_axis(anc, jnp.broadcast_to(jnp.clip(rel, 0, N - 1), (B, Tq, S)), axis=2)
    return (rel < 0) | (in_block & block)
