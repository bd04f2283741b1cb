"""`DraftVerify` (DV): self-speculation with a static exit whose chain stops at the first draft token
below a confidence threshold, the threshold adapted after every round (Draft & Verify, Zhang et al.
2024, with the constants of DEL's baseline, `DV_speculation_generator.py`):

    accr = cumulative accepted / cumulative drafted
    AR  ← β1·AR + (1−β1)·accr          (AR starts at the first accr)
    th  ← β2·th + (1−β2)·(th + ε  if AR < α_target  else  th − ε)
    β1 = 0.5, β2 = 0.9, α_target = 0.8, th0 = 0.6, ε = 0.01; at most `depth` (18 in DEL) drafts.

Per row: each row keeps its own counts, AR and threshold (a batch row equals its single run). The
official object lives for a whole benchmark, so its threshold carries over between prompts; ours
restarts with every `speculate` call."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxspec.cache import KVCache
from jaxspec.sampling import SamplingConfig
from jaxspec.selfspec.chain import draft_chain
from jaxspec.selfspec.layerskip import LayerSkip
from jaxspec.speculative.seam import CHAIN_ONLY, Outcome, Round, Target
from jaxspec.speculative.tree import Tree


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DVState:
    threshold: jax.Array  # f32[B] stop after a draft token whose probability is below it
    rate: jax.Array  # f32[B] AR, the smoothed acceptance rate (NaN before the first round)
    accepted: jax.Array  # i32[B] cumulative
    drafted: jax.Array  # i32[B] cumulative


@dataclasses.dataclass(frozen=True)
class DraftVerify(LayerSkip):
    beta1: float = 0.5
    beta2: float = 0.9
    target_rate: float = 0.8
    start: float = 0.6
    epsilon: float = 0.01
    variable_depth = True
    shapes = CHAIN_ONLY
    shapes_why = "drafts a chain whose length its confidence threshold decides: use chain(cap)"

    def describe(self) -> dict:
        return {**super().describe(), "threshold_start": self.start, "target_rate": self.target_rate}

    def init(self, params, target: Target, prompts, prompt_lens, *, max_len: int, method) -> DVState:
        B = prompts.shape[0]
        return DVState(
            jnp.full((B,), self.start, jnp.float32),
            jnp.full((B,), jnp.nan, jnp.float32),
            jnp.zeros((B,), jnp.int32),
            jnp.zeros((B,), jnp.int32),
        )

    def propose(
        self, params, st: DVState, target: Target, rnd: Round, key, *, method, sampling: SamplingConfig
    ) -> tuple[DVState, Tree, KVCache]:
        lq_root, c = self._root(params, target, rnd, sampling)
        step = self._step(params, target, rnd, 1, sampling)
        c, tree = draft_chain(
            lambda c, tok, d: step(c, tok, None, d),
            c,
            lq_root,
            key,
            method.shape,
            sampling,
            jnp.int32(method.shape.depth),
            st.threshold,
        )
        return st, tree, c.replace(lengths=target.cache.lengths)

    def commit(self, params, st: DVState, out: Outcome, *, method) -> DVState:
        live = out.live
        accepted = st.accepted + jnp.where(live, out.n, 0)
        drafted = st.drafted + jnp.where(live, out.drafted, 0)
        accr = accepted / jnp.maximum(drafted, 1)
        rate = jnp.where(jnp.isnan(st.rate), accr, self.beta1 * st.rate + (1 - self.beta1) * accr)
        new = jnp.where(rate < self.target_rate, st.threshold + self.epsilon, st.threshold - self.epsilon)
        threshold = self.beta2 * st.threshold + (1 - self.beta2) * new
        keep = lambda a, b: jnp.where(live, a, b)  # noqa: E731  (finished rows change nothing)
        return DVState(
            keep(threshold, st.threshold).astype(jnp.float32),
            keep(rate, st.rate).astype(jnp.float32),
            accepted,
            drafted,
        )
