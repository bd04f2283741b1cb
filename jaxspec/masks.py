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
    """T tree nodes written at slots lengths[b] + t: node t sees the committed prefix and its own
    root-to-node path. ancestors: bool[B, T, T] (or [T, T]), ancestors[t, u] = u is t or an ancestor of t."""
    B = lengths.shape[0]
    T = ancestors.shape[-1]
    anc = jnp.broadcast_to(ancestors, (B, T, T))
    s = jnp.arange(S)[None, None, :]
    rel = s - lengths[:, None, None]  # slot relative to the first new token
    in_block = (rel >= 0) & (rel < T)
    block = jnp.take_along_axis(anc, jnp.broadcast_to(jnp.clip(rel, 0, T - 1), (B, T, S)), axis=2)
    return (rel < 0) | (in_block & block)
