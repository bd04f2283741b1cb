"""`FSM` (the FS baseline of DEL's paper, `FSM_speculation_generator.py`): a static exit whose draft
length γ moves by one after every round — +1 when every draft was accepted, −1 otherwise — within
[0, depth]. γ = 0 drafts nothing (a plain decoding step, which counts as all accepted: +1 next round).

Per row: each row keeps its own γ (drafting runs to the batch's largest, a row's nodes past its own γ
stay invalid), so a batch row equals its single run. γ restarts at `start` with every `speculate`
call, as the official benchmark resets it per prompt."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from jaxspec.cache import KVCache
from jaxspec.sampling import SamplingConfig
from jaxspec.selfspec.layerskip import LayerSkip
from jaxspec.speculative.seam import CHAIN_ONLY, Outcome, Round, Target
from jaxspec.speculative.tree import Tree, grow_tree, init_tree


@dataclasses.dataclass(frozen=True)
class FSM(LayerSkip):
    """start: the first round's γ (default: the chain's depth)."""

    start: int | None = None
    variable_depth = True
    shapes = CHAIN_ONLY
    shapes_why = "moves its own draft length: use chain(cap)"

    def describe(self) -> dict:
        return {**super().describe(), "gamma_start": self.start}

    def init(self, params, target: Target, prompts, prompt_lens, *, max_len: int, method) -> jax.Array:
        start = method.shape.depth if self.start is None else self.start
        if not 0 <= start <= method.shape.depth:
            raise ValueError(
                f"FSM's starting draft length {start} is outside 0..{method.shape.depth} (the chain's cap)"
            )
        super().init(params, target, prompts, prompt_lens, max_len=max_len, method=method)
        return jnp.full((prompts.shape[0],), start, jnp.int32)  # γ per row

    def propose(
        self, params, gamma, target: Target, rnd: Round, key, *, method, sampling: SamplingConfig
    ) -> tuple[jax.Array, Tree, KVCache]:
        shape, B = method.shape, rnd.last.shape[0]
        steps = jnp.max(jnp.where(rnd.live, gamma, 0))

        def draft(_):
            lq_root, c = self._root(params, target, rnd, sampling)
            c, t = grow_tree(self._step(params, target, rnd, 1, sampling), c, lq_root, key, shape, sampling, steps)
            depth = jnp.arange(1, shape.depth + 1, dtype=jnp.int32)[None]
            return dataclasses.replace(t, valid=t.valid & (depth <= gamma[:, None])), c.replace(
                lengths=target.cache.lengths
            )

        def plain(_):
            return init_tree(B, shape, None if sampling.greedy else self.bound_cfg.vocab_size), target.cache

        t, c = lax.cond(steps > 0, draft, plain, None)
        return gamma, t, c

    def commit(self, params, gamma, out: Outcome, *, method) -> jax.Array:
        del params
        new = jnp.clip(jnp.where(out.n >= out.drafted, gamma + 1, gamma - 1), 0, method.shape.depth)
        return jnp.where(out.live, new, gamma).astype(jnp.int32)
