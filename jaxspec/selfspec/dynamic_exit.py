"""The first E layers with E chosen at run time among static candidate exits e_0 < … < e_{m−1}.

Two dispatches (a static option; README "Self-speculation and DEL" has the measurement):
  segments  layers [0, e_0) always, then one `lax.cond` per segment [e_{j−1}, e_j) that runs it when
            j <= idx: m − 1 conditionals per draft forward, code size L;
  switch    one `lax.switch` over m branches, branch j the first e_j layers unrolled: one conditional per
            draft forward, code size Σ e_j (compile time grows with the candidate set).
Not a `lax.cond` per layer: XLA's GPU conditional reads its predicate on the
host, so a conditional per layer is a host sync per layer per draft step; a static exit (LayerSkip) has
none. Each conditional carries only the K/V of the layers it may write, so XLA updates them in place."""

from __future__ import annotations

import jax
from jax import lax

from jaxspec.cache import KVCache
from jaxspec.config import ModelConfig
from jaxspec.model import decoder_layer, embed, head

DISPATCHES = ("segments", "switch")


def _layers(params, x, ks, vs, lo: int, hi: int, positions, write_at, mask, cfg):
    """Layers [lo, hi) over x; ks / vs are the K/V tuples of layers [lo, hi)."""
    ks, vs = list(ks), list(vs)
    for j, l in enumerate(range(lo, hi)):
        x, ks[j], vs[j] = decoder_layer(params["layers"][l], x, ks[j], vs[j], positions, write_at, mask, cfg)
    return x, tuple(ks), tuple(vs)


def run_to_exit(
    params,
    x: jax.Array,
    cache: KVCache,
    positions,
    mask,
    cfg: ModelConfig,
    exits: tuple[int, ...],
    idx: jax.Array,
    dispatch: str = "segments",
) -> tuple[jax.Array, KVCache]:
    """x f32[B, T, D] through layers [0, exits[idx]) writing their K/V at `cache.lengths`; layers at or
    beyond the exit are untouched. Returns (h f32[B, T, D], cache)."""
    ks, vs, at = list(cache.k), list(cache.v), cache.lengths
    top = exits[-1]
    if dispatch == "switch":

        def branch(e):
            def run(args):
                x, k, v = args
                x, k2, v2 = _layers(params, x, k[:e], v[:e], 0, e, positions, at, mask, cfg)
                return x, k2 + k[e:], v2 + v[e:]

            return run

        x, k, v = lax.switch(idx, [branch(e) for e in exits], (x, tuple(ks[:top]), tuple(vs[:top])))
        ks[:top], vs[:top] = k, v
    elif dispatch == "segments":
        x, ks[: exits[0]], vs[: exits[0]] = _layers(
            params, x, ks[: exits[0]], vs[: exits[0]], 0, exits[0], positions, at, mask, cfg
        )
        for j in range(1, len(exits)):
            lo, hi = exits[j - 1], exits[j]
            x, ks[lo:hi], vs[lo:hi] = lax.cond(
                idx >= j,
                lambda a, lo=lo, hi=hi: _layers(params, *a, lo, hi, positions, at, mask, cfg),
                lambda a: a,
                (x, tuple(ks[lo:hi]), tuple(vs[lo:hi])),
            )
    else:
        raise ValueError(f"unknown exit dispatch {dispatch!r}: one of {DISPATCHES}")
    return x, cache.replace(k=tuple(ks), v=tuple(vs))


def exit_logits(
    params,
    tokens: jax.Array,
    cache: KVCache,
    positions,
    mask,
    cfg: ModelConfig,
    exits: tuple[int, ...],
    idx: jax.Array,
    dispatch: str = "segments",
):
    """tokens i32[B, T] through the first exits[idx] layers, final norm and LM head: (logits f32[B, T, V], cache)."""
    x, cache = run_to_exit(params, embed(params, tokens, cfg), cache, positions, mask, cfg, exits, idx, dispatch)
    return head(params, x, cfg), cache
