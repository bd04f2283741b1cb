"""`DraftModel`, the separate-draft-model drafter. The seam a drafter implements (init / propose /
commit, and what the engine hands it) is in seam.py; the tree growth every drafter shares in tree.py.

`DraftModel` is a separate small model sharing the target's vocabulary. Its KV cache is exact: every
round first feeds the last two committed tokens (T=2 input), which writes the token before `last` — the
one missing from the cache when the whole previous draft was accepted — without an extra draft forward;
a re-written entry is identical. It keeps that previous token and an adaptive chain's k in its state."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxspec.cache import KVCache, init_cache
from jaxspec.config import ModelConfig
from jaxspec.model import forward, forward_prompt
from jaxspec.sampling import SamplingConfig
from jaxspec.sharding import ShardingPlan, constrain_cache
from jaxspec.speculative.hot_vocab import HotVocab, trim_head
from jaxspec.speculative.seam import Drafter, Outcome, Round, Target, adaptive_steps, next_k
from jaxspec.speculative.tree import Tree, depth_step, draft_logprobs, grow_tree


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DraftModelState:
    cache: KVCache
    prev: jax.Array  # i32[B] committed token T-2 (fed with `last` at the next round's step 1)
    k: jax.Array  # i32[] depths to draft next round (an adaptive chain's k; else D)


@dataclasses.dataclass(frozen=True)
class DraftModel(Drafter):
    """A separate (smaller) model sharing the target's vocabulary, with its own exact KV cache; `vocab`:
    a hot-vocabulary head (hot_vocab.py) — it drafts only the V' most frequent tokens, reading V' rows
    of its LM head instead of V. `speculate` binds an unbound one (cfg None) to the draft model."""

    cfg: ModelConfig | None = None
    plan: ShardingPlan | None = None
    vocab: HotVocab | None = None

    @property
    def bound(self) -> bool:
        return self.cfg is not None

    def bind(self, cfg: ModelConfig, mesh=None, plan: ShardingPlan | None = None) -> "DraftModel":
        del mesh
        return dataclasses.replace(self, cfg=cfg, plan=plan)

    def prepare(self, params):
        if self.cfg is None:
            raise ValueError("DraftModel is not bound to a draft model: speculate / make_runner bind it")
        return params if self.vocab is None else trim_head(params, self.cfg, self.vocab)

    def describe(self) -> dict:
        return {"draft_vocab": self.vocab.describe() if self.vocab is not None else None}

    def init(
        self, params, target: Target, prompts: jax.Array, prompt_lens: jax.Array, *, max_len: int, method
    ) -> DraftModelState:
        del target
        cache = constrain_cache(init_cache(self.cfg, prompts.shape[0], max_len), self.plan)
        _, cache = forward_prompt(params, prompts, prompt_lens, cache, self.cfg)
        prev = jnp.take_along_axis(prompts, (prompt_lens - 1)[:, None], axis=1)[:, 0]
        return DraftModelState(cache, prev, jnp.int32(method.k_start))

    def propose(
        self, params, st: DraftModelState, target: Target, rnd: Round, key, *, method, sampling: SamplingConfig
    ) -> tuple[DraftModelState, Tree, KVCache]:
        shape, committed = method.shape, rnd.committed
        B = committed.shape[0]
        S = st.cache.max_len
        # (prev, last) at slots T-2, T-1: the cache then holds exactly the T committed tokens
        start = committed - 2
        logits, cache, _ = forward(
            params,
            jnp.stack([st.prev, rnd.last], 1),
            st.cache.replace(lengths=start),
            self.cfg,
            positions=start[:, None] + jnp.arange(2, dtype=jnp.int32),
            logits_at=jnp.ones((B, 1), jnp.int32),
        )
        cache = constrain_cache(cache, self.plan)

        step = depth_step(
            lambda t, c, pos, mask: forward(params, t, c, self.cfg, positions=pos, mask=mask)[:2],
            committed,
            shape.width,
            S,
            sampling,
            lambda c: constrain_cache(c, self.plan),
        )
        cache, tree = grow_tree(
            step, cache, draft_logprobs(logits[:, 0], sampling), key, shape, sampling, adaptive_steps(method, st.k)
        )
        return dataclasses.replace(st, cache=cache.replace(lengths=committed)), tree, target.cache

    def commit(self, params, st: DraftModelState, out: Outcome, *, method) -> DraftModelState:
        """Move the accepted path's draft K/V (depths 1..D-1; the depth-D leaf was never fed) next to the
        committed prefix (a chain's nodes are already contiguous); remember the token before `extra`."""
        del params
        shape, cache = method.shape, st.cache
        if shape.width > 1 and shape.depth > 1:
            cache = constrain_cache(
                cache.gather(out.committed[:, None] + out.path[:, : shape.depth - 1], out.committed), self.plan
            )
        return DraftModelState(cache, jnp.where(out.live, out.emitted_prev, st.prev), next_k(method, st.k, out))
