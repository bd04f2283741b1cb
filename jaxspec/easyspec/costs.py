"""EasySpec's drafting costs for the analytic speedup (speculative/costs.py): a round's first draft
forward is the exact calibration pass over its block (every_round: D + 1 tokens; every_mismatch: the
widened block, when it calibrates) or, without calibration, the layer-parallel forward of 2 tokens; every
later depth is the layer-parallel forward of K tokens."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxspec.cache import init_cache
from jaxspec.easyspec import calibration as cal
from jaxspec.easyspec.layer_parallel import fuzzy_forward
from jaxspec.masks import causal_mask, tree_mask
from jaxspec.timing import best_time


@functools.partial(jax.jit, static_argnames=("drafter", "tree"))
def _fuzzy(params, tokens, cache, *, drafter, tree: bool):
    T = tokens.shape[1]
    pos = cache.lengths[:, None] + jnp.arange(T, dtype=jnp.int32)
    if tree:  # one depth of siblings under a common parent: each sees the prefix and itself
        mask = tree_mask(cache.lengths, jnp.eye(T, dtype=bool), cache.max_len)
    else:
        mask = causal_mask(cache.lengths, T, cache.max_len)
    return fuzzy_forward(
        params["model"],
        params["groups"],
        drafter.groups,
        tokens,
        cache,
        pos,
        mask,
        drafter.bound_cfg,
        drafter.policy,
        drafter.layer_mesh,
    )[0]


@functools.partial(jax.jit, static_argnames=("drafter",))
def _exact(params, tokens, cache, *, drafter):
    T = tokens.shape[1]
    pos = cache.lengths[:, None] + jnp.arange(T, dtype=jnp.int32)
    at = jnp.full((tokens.shape[0], 1), T - 1, jnp.int32)
    return cal.exact_pass(
        params["model"], params["layers"], tokens, cache, pos, at, drafter.bound_cfg, drafter.scan_calibration
    )[0]


def draft_costs(drafter, params, shape, *, context: int, max_len: int, repeats: int = 5) -> dict:
    """Best-of-`repeats` seconds of a round's first draft forward and of each later one (batch 1, `context`
    cached tokens); `params` as `drafter.prepare` returns them."""
    cache = init_cache(drafter.bound_cfg, 1, max_len).replace(lengths=jnp.asarray([context], jnp.int32))
    if drafter.mesh is not None:
        cache = jax.device_put(cache, jax.sharding.NamedSharding(drafter.mesh, jax.sharding.PartitionSpec()))
    if drafter.runs_calibration:
        width = cal.exact_block_width(drafter.calibration, shape.depth, drafter.max_fuzzy_rounds)
        first = best_time(
            functools.partial(_exact, drafter=drafter), params, jnp.ones((1, width), jnp.int32), cache, repeats=repeats
        )
    else:
        first = best_time(
            functools.partial(_fuzzy, drafter=drafter, tree=False),
            params,
            jnp.ones((1, 2), jnp.int32),
            cache,
            repeats=repeats,
        )
    step = best_time(
        functools.partial(_fuzzy, drafter=drafter, tree=shape.width > 1),
        params,
        jnp.ones((1, shape.width), jnp.int32),
        cache,
        repeats=repeats,
    )
    return {"draft_first_s": first, "draft_step_s": step}
