"""Drafters: what proposes the tokens a speculative round verifies.

The engine never knows which drafter it runs. A drafter is a frozen (hashable, static) dataclass with
three pure functions over its own state pytree, plus two host-side hooks:

  prepare(params) -> params
      once, before generation: the param tree the three functions receive (e.g. EasySpec's stacked
      group weights); DraftModel's is its params;
  cache_slots(slots, shape) -> int
      the slots its cache needs next to the target's `slots` (EasySpec: room for a calibration block);

  init(params, prompts, prompt_lens, max_len) -> state
      prefill on the padded prompts i32[B, P] (true lengths i32[B]);
  propose(params, state, prev, last, committed, key, shape, sampling, steps) -> (state, Tree)
      committed i32[B] = T tokens so far per row, whose last two are `prev` and `last`; grow a tree of
      `shape` (only `steps` ≤ D depths: adaptive chains); `Tree.logq` holds the processed draft
      distributions children were drawn from (sampling);
  commit(params, state, tree, n, path, committed, shape) -> state
      the round accepted the `n` nodes `path` i32[B, D] of the tree after `committed` tokens.

`DraftModel` is a separate small model. Its KV cache is exact: every round first feeds the last two
committed tokens (T=2 input), which writes the token before `last` — the one missing from the cache when
the whole previous draft was accepted — without an extra draft forward; a re-written entry is identical.
EasySpec's layer-parallel draft and DEL's self-draft implement the same three functions."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from jaxspec.cache import KVCache, init_cache
from jaxspec.config import ModelConfig
from jaxspec.masks import tree_mask
from jaxspec.model import forward, forward_prompt
from jaxspec.sampling import SamplingConfig, processed_logprobs
from jaxspec.sharding import ShardingPlan, constrain_cache
from jaxspec.speculative.tree import (Tree, TreeShape, add_depth, depth_block, init_tree, ranked_children,
                                      select_children)


def draft_logprobs(logits: jax.Array, sampling: SamplingConfig) -> jax.Array:
    """The distribution a drafter draws from: the processed one when sampling (the acceptance ratio needs
    exactly it), the plain softmax when greedy (tree scores only)."""
    if sampling.greedy:
        return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return processed_logprobs(logits, sampling)


def grow_tree(step_fn, carry, lq_root: jax.Array, key, shape: TreeShape, sampling: SamplingConfig, steps):
    """Grow a tree from the root distribution lq_root f32[B, V], one depth per call of
    `step_fn(carry, leaves i32[B, K], ancestor_rows bool[B, K, N], d) -> (carry, logq f32[B, K, V])`, which
    runs the draft on the depth-(d-1) leaves. Shared by every drafter; returns (carry, Tree)."""
    B, V = lq_root.shape
    K = shape.width
    sampled = not sampling.greedy
    tree = init_tree(B, shape, V if sampled else None)
    if sampled:
        tree = dataclasses.replace(tree, logq=tree.logq.at[:, 0].set(lq_root))
    tok, lq_tok, _ = ranked_children(jax.random.fold_in(key, 1), lq_root[:, None], K, sampled)
    tree = add_depth(tree, jnp.int32(1), tok[:, 0], jnp.full((B, K), -1, jnp.int32), jnp.isfinite(lq_tok[:, 0]), shape)

    def body(d, state):  # feeds the depth-(d-1) leaves, adds depth d
        tree, carry, log_pi = state
        leaves, anc = depth_block(tree.tokens, d - 1, K), depth_block(tree.ancestors, d - 1, K)
        carry, lq = step_fn(carry, leaves, anc, d)  # [B, K, V]
        if sampled:
            tree = dataclasses.replace(tree, logq=lax.dynamic_update_slice_in_dim(tree.logq, lq, 1 + (d - 2) * K, 1))
        tok, lq_tok, score = ranked_children(jax.random.fold_in(key, d), lq, K, sampled)
        sel = select_children(log_pi, score, K)  # [B, K] in [0, K*K)
        v = sel // K
        pick = lambda a: jnp.take_along_axis(a.reshape(B, K * K), sel, axis=1)  # noqa: E731
        lq_sel = pick(lq_tok)
        valid = jnp.take_along_axis(depth_block(tree.valid, d - 1, K), v, axis=1) & jnp.isfinite(lq_sel)
        tree = add_depth(tree, d, pick(tok), (d - 2) * K + v, valid, shape)
        return tree, carry, jnp.take_along_axis(log_pi, v, axis=1) + lq_sel

    tree, carry, _ = lax.fori_loop(2, steps + 1, body, (tree, carry, lq_tok[:, 0]))
    return carry, tree


@dataclasses.dataclass(frozen=True)
class DraftModel:
    """A separate (smaller) model sharing the target's vocabulary, with its own exact KV cache."""
    cfg: ModelConfig
    plan: ShardingPlan | None = None

    def prepare(self, params):
        return params

    def cache_slots(self, slots: int, shape: TreeShape) -> int:
        del shape
        return slots

    def init(self, params, prompts: jax.Array, prompt_lens: jax.Array, max_len: int) -> KVCache:
        cache = constrain_cache(init_cache(self.cfg, prompts.shape[0], max_len), self.plan)
        _, cache = forward_prompt(params, prompts, prompt_lens, cache, self.cfg)
        return cache

    def propose(self, params, cache: KVCache, prev, last, committed, key, shape: TreeShape,
                sampling: SamplingConfig, steps) -> tuple[KVCache, Tree]:
        B = prev.shape[0]
        S = cache.max_len
        # (prev, last) at slots T-2, T-1: the cache then holds exactly the T committed tokens
        start = committed - 2
        logits, cache, _ = forward(params, jnp.stack([prev, last], 1), cache.replace(lengths=start), self.cfg,
                                   positions=start[:, None] + jnp.arange(2, dtype=jnp.int32),
                                   logits_at=jnp.ones((B, 1), jnp.int32))
        cache = constrain_cache(cache, self.plan)

        def step(cache, leaves, anc, d):  # depth-(d-1) nodes sit in slots T + (d-2)K.., position T + d - 2
            c = cache.replace(lengths=committed + (d - 2) * shape.width)
            pos = jnp.broadcast_to((committed + d - 2)[:, None], leaves.shape)
            lg, c, _ = forward(params, leaves, c, self.cfg, positions=pos, mask=tree_mask(committed, anc, S))
            return constrain_cache(c, self.plan), draft_logprobs(lg, sampling)

        cache, tree = grow_tree(step, cache, draft_logprobs(logits[:, 0], sampling), key, shape, sampling, steps)
        return cache.replace(lengths=committed), tree

    def commit(self, params, cache: KVCache, tree: Tree, n, path, committed, shape: TreeShape) -> KVCache:
        """Move the accepted path's draft K/V (depths 1..D-1; the depth-D leaf was never fed) next to the
        committed prefix. A chain's nodes are already contiguous."""
        del params, tree, n
        if shape.width == 1 or shape.depth == 1:
            return cache
        return constrain_cache(cache.gather(committed[:, None] + path[:, :shape.depth - 1], committed), self.plan)
