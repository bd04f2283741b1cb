"""`LayerSkip` (LS): self-speculation with a static exit — the target's first E layers, its final norm
and LM head draft; all L layers verify (LayerSkip, arXiv 2404.16710; DEL's LS baseline).

    speculate(target, None, prompts, method=chain(6), drafter=LayerSkip(exit_layer=3))

One KV cache, the target's: a round writes the shallow layers' K/V of `last` (slot T-1) and of the
drafts (slots T..) while drafting — legal under the seam's invariant (slots >= committed - 1) — and
verification then runs every layer over [last] + drafts from slot T-1, overwriting them with the same
values for the accepted prefix (the shallow layers see the same tokens either way). Rollback is the
engine's: `lengths` = T + n for every layer at once, so E could change every round.

A hot-vocabulary head (`vocab=`, FR-Spec / VocabTrim, hot_vocab.py; every self-drafter): the draft's
logits come from the kept rows of the target's head only — a copy of V'·D weights gathered once by
`prepare_for` (the drafter's params: {"hot_head": ...}), read instead of the V·D head per draft step;
verification keeps the full head, so the output is the target's as always.

Verification recomputes the drafted tokens' shallow layers instead of reusing LayerSkip's exit states:
at batch 1 a forward is bound by its weight reads, which are the same (every layer is read once per
verification either way), and reuse would cost a second, ragged code path through the deep layers."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxspec.cache import KVCache
from jaxspec.config import ModelConfig
from jaxspec.masks import causal_mask
from jaxspec.model import embed, head, run_layers
from jaxspec.sampling import SamplingConfig
from jaxspec.sharding import ShardingPlan, constrain_cache
from jaxspec.speculative.hot_vocab import HotVocab, trim_head
from jaxspec.speculative.seam import Drafter, Outcome, Round, Target, adaptive_steps, next_k
from jaxspec.speculative.tree import Tree, depth_step, draft_logprobs, grow_tree


def check_exit(exit_layer: int, cfg: ModelConfig) -> int:
    """An exit is a layer count E in 1..L-1 (E = L would be the target itself)."""
    L = cfg.num_layers
    if not isinstance(exit_layer, int) or not 1 <= exit_layer <= L - 1:
        raise ValueError(
            f"exit layer {exit_layer!r} is outside 1..{L - 1} (the target has {L} layers; the draft "
            f"runs the first E of them)"
        )
    return exit_layer


def shallow_logits(params, tokens, cache: KVCache, positions, mask, exit_layer: int, cfg: ModelConfig):
    """The first `exit_layer` layers over tokens i32[B, T] at slots `cache.lengths` (writing their K/V
    into the target's cache), then the final norm and LM head: (logits f32[B, T, V], cache, h f32[B, T, D])."""
    x, cache, _ = run_layers(params, embed(params, tokens, cfg), cache, positions, mask, cfg, 0, exit_layer)
    return head(params, x, cfg), cache, x


@dataclasses.dataclass(frozen=True)
class SelfDrafter(Drafter):
    """What every self-drafter shares: it is bound to the target's config and sharding plan (by
    `speculate`), takes no draft model, and drafts through `_shallow` — the target's first layers up to
    its exit — in the target's own cache (`_root` for `last`, `_step` for the later depths). `vocab`: a
    hot-vocabulary draft head (module docstring)."""

    cfg: ModelConfig | None = dataclasses.field(default=None, kw_only=True)
    plan: ShardingPlan | None = dataclasses.field(default=None, kw_only=True)
    vocab: HotVocab | None = dataclasses.field(default=None, kw_only=True)
    writes_target_cache = True
    needs_draft_model = False

    def check(self, cfg: ModelConfig) -> None:
        """Raise ValueError for options that do not fit the target `cfg`."""

    def bind(self, cfg: ModelConfig, mesh=None, plan: ShardingPlan | None = None):
        del mesh
        if self.vocab is not None and self.vocab.vocab_size != cfg.vocab_size:
            raise ValueError(
                f"the hot vocabulary was made for {self.vocab.vocab_size} tokens, the target has {cfg.vocab_size}"
            )
        self.check(cfg)
        return dataclasses.replace(self, cfg=cfg, plan=plan)

    def vocab_describe(self) -> dict:
        return {"draft_vocab": self.vocab.describe() if self.vocab is not None else None}

    @property
    def bound(self) -> bool:
        return self.cfg is not None

    @property
    def bound_cfg(self) -> ModelConfig:
        if self.cfg is None:
            raise ValueError(
                f"{type(self).__name__} is not bound to a target: pass it to speculate / make_runner, or .bind(cfg)"
            )
        return self.cfg

    def prepare(self, params):
        if params is not None:
            raise ValueError(
                f"{type(self).__name__} drafts with the target's own layers: give no draft model (draft=None)"
            )
        return None

    def prepare_for(self, params, target_params):
        """None, or with a hot vocabulary {"hot_head": the kept rows of the target's head} (gathered once:
        V'·D weights beside the target's)."""
        self.prepare(params)
        if self.vocab is None:
            return None
        return {"hot_head": trim_head(target_params, self.bound_cfg, self.vocab)["hot_head"]}

    @staticmethod
    def _draft_params(target_params, params):
        """The params a draft step reads: the target's, with the hot head when there is one."""
        return target_params if params is None else {**target_params, "hot_head": params["hot_head"]}

    def check_head(self, target_params) -> None:
        """A self-drafter's exits read through the target's final norm and LM head: both must be there."""
        need = ["final_norm", "embed"] + ([] if self.bound_cfg.tie_embeddings else ["lm_head"])
        missing = [k for k in need if k not in target_params]
        if missing:
            raise ValueError(
                f"{type(self).__name__} needs the target's final norm and LM head; its params lack {missing}"
            )

    def _shallow(self, params, tokens, cache: KVCache, positions, mask, exit_state):
        """(logits f32[B, T, V], cache) of the first layers up to the exit (`exit_state`: the drafter's
        choice for this round, None for a static exit)."""
        raise NotImplementedError

    def _root(self, params, target: Target, rnd: Round, sampling: SamplingConfig, exit_state=None):
        """`last` at slot T-1 through the shallow layers (`params`: the drafter's, from `prepare_for`):
        (depth 1's distribution f32[B, V], target cache)."""
        T = rnd.committed
        c = target.cache.replace(lengths=T - 1)
        logits, c = self._shallow(
            self._draft_params(target.params, params),
            rnd.last[:, None],
            c,
            (T - 1)[:, None],
            causal_mask(T - 1, 1, c.max_len),
            exit_state,
        )
        return draft_logprobs(logits[:, 0], sampling), constrain_cache(c, self.plan)

    def _step(self, params, target: Target, rnd: Round, width: int, sampling: SamplingConfig, exit_state=None):
        """The draft step for `grow_tree` / `draft_chain`: as DraftModel's, the depth-(d-1) leaves at
        slots T + (d-2)K.., position T + d - 2, through the shallow layers of the target's cache."""
        draft_params = self._draft_params(target.params, params)
        return depth_step(
            lambda t, c, pos, mask: self._shallow(draft_params, t, c, pos, mask, exit_state),
            rnd.committed,
            width,
            target.cache.max_len,
            sampling,
            lambda c: constrain_cache(c, self.plan),
        )


@dataclasses.dataclass(frozen=True)
class LayerSkip(SelfDrafter):
    """The static-exit self-drafter; `cfg` (the target's) and `plan` are bound by `speculate`."""

    exit_layer: int

    def check(self, cfg: ModelConfig) -> None:
        check_exit(self.exit_layer, cfg)

    def _shallow(self, params, tokens, cache, positions, mask, exit_state):
        del exit_state
        logits, cache, _ = shallow_logits(params, tokens, cache, positions, mask, self.exit_layer, self.bound_cfg)
        return logits, cache

    def describe(self) -> dict:
        return {"exit_layer": self.exit_layer, "layers": self.bound_cfg.num_layers, **self.vocab_describe()}

    def draft_costs(self, params, shape, *, context: int, max_len: int, repeats: int = 5) -> dict:
        """Measured seconds of a round's first draft forward (`last`, 1 token) and of each later one (K
        tokens): the target truncated to its first E layers, with its head (the analytic speedup's inputs)."""
        from jaxspec.speculative.costs import time_forward

        cfg = dataclasses.replace(self.bound_cfg, num_layers=self.exit_layer)
        shallow = dict(params, layers=params["layers"][: self.exit_layer])
        if self.vocab is not None:  # the draft step reads the trimmed head
            shallow = trim_head(shallow, cfg, self.vocab)
        kw = dict(context=context, max_len=max_len, repeats=repeats)
        return {
            "draft_first_s": time_forward(shallow, cfg, 1, **kw),
            "draft_step_s": time_forward(shallow, cfg, shape.width, tree=shape.width > 1, **kw),
        }

    def init(self, params, target: Target, prompts, prompt_lens, *, max_len: int, method) -> jax.Array:
        del params, target, prompts, prompt_lens, max_len
        return jnp.int32(method.k_start)  # the state: an adaptive chain's k

    def propose(
        self, params, k, target: Target, rnd: Round, key, *, method, sampling: SamplingConfig
    ) -> tuple[jax.Array, Tree, KVCache]:
        lq_root, c = self._root(params, target, rnd, sampling)
        c, tree = grow_tree(
            self._step(params, target, rnd, method.shape.width, sampling),
            c,
            lq_root,
            key,
            method.shape,
            sampling,
            adaptive_steps(method, k),
        )
        return k, tree, c.replace(lengths=target.cache.lengths)

    def commit(self, params, k, out: Outcome, *, method) -> jax.Array:
        del params
        return next_k(method, k, out)
