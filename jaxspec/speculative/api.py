"""`speculate`: the host-facing call — check the pair, pad the prompts, build the static spec, run the
one jitted generation (`engine.run_speculation`) and return tokens and statistics per row."""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from jaxspec.config import ModelConfig
from jaxspec.decode import cache_slots, output_ids, pad_prompts
from jaxspec.sampling import GREEDY, SamplingConfig
from jaxspec.sharding import ShardingPlan
from jaxspec.speculative.drafters import DraftModel
from jaxspec.speculative.engine import SpecMethod, SpecSpec, SpecState, cache_slots_needed, chain, run_speculation
from jaxspec.speculative.metrics import summarize


@dataclasses.dataclass
class Model:
    """Params + config (+ optional sharding plan and tokenizer); `conversion.loader.LoadedModel` fits too."""
    params: Any
    cfg: ModelConfig
    plan: ShardingPlan | None = None
    tokenizer: Any = None


@dataclasses.dataclass
class SpecOutput:
    output_ids: list[list[int]]  # per row, EOS included
    stats: dict  # metrics.summarize over all rows
    per_row: list[dict]
    state: SpecState


def check_vocab(target_cfg: ModelConfig, draft_cfg: ModelConfig, target_tokenizer=None, draft_tokenizer=None) -> None:
    """A draft must share the target's vocabulary: same size and, when tokenizers are known, the same table."""
    if target_cfg.vocab_size != draft_cfg.vocab_size:
        raise ValueError(f"vocab mismatch: the target has {target_cfg.vocab_size} token ids, the draft "
                         f"{draft_cfg.vocab_size}; a draft model must share the target's vocabulary")
    if target_tokenizer is not None and draft_tokenizer is not None:
        a, b = target_tokenizer.get_vocab(), draft_tokenizer.get_vocab()
        if a != b:
            diff = sorted((t for t in set(a) | set(b) if a.get(t) != b.get(t)), key=lambda t: (a.get(t, -1), t))
            eg = ", ".join(f"{t!r}: target {a.get(t)}, draft {b.get(t)}" for t in diff[:3])
            raise ValueError(f"vocab mismatch: the target and draft token tables differ in {len(diff)} entries "
                             f"({eg}); a draft model must share the target's vocabulary")


def bind_drafter(drafter, draft, target_params=None, method=None, max_len: int = 512):
    """None → `DraftModel` over `draft`; a drafter configuration with `bind` (EasySpec) → bound to the
    draft's config and mesh; a self-drafter (it writes the target cache; `draft` is then the target) →
    bound to the target's config and sharding plan; a bound drafter as it is. A drafter that measures
    its costs (DEL(cost="measured")) measures them on `target_params` for `method`'s depth and a cache
    of `max_len` slots."""
    plan = getattr(draft, "plan", None)
    if drafter is None:
        return DraftModel(draft.cfg, plan)
    if getattr(drafter, "cfg", True) is None and hasattr(drafter, "bind"):
        drafter = drafter.bind(draft.cfg, plan.mesh if plan is not None else None, plan=plan)
        if not drafter.writes_target_cache:
            return drafter
    if target_params is not None and hasattr(drafter, "check_head"):  # a self-drafter reads the target's head:
        drafter.check_head(target_params)  # missing, it says so before anything runs
    if target_params is not None and hasattr(drafter, "calibrate"):  # DEL(cost="measured"): timed here
        drafter = drafter.calibrate(target_params, max_len=max_len,
                                    **({} if method is None else {"depth": method.shape.depth}))
    return drafter


def make_spec(target_cfg: ModelConfig, drafter, method: SpecMethod, *, prompt_len: int, max_new_tokens: int,
              sampling: SamplingConfig = GREEDY, eos_ids: Sequence[int] = (), plan: ShardingPlan | None = None,
              max_len: int | None = None) -> SpecSpec:
    """The static spec for prompts up to `prompt_len` tokens; `max_len` fixes the cache slots (e.g. one
    size for a whole benchmark), else the need is bucketed. Raises ValueError for a cache or position
    overflow and for a vocab mismatch."""
    check_vocab(target_cfg, drafter.cfg)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    need = cache_slots_needed(prompt_len, max_new_tokens, method.shape)
    slots = cache_slots(need) if max_len is None else max_len
    if need > slots:
        raise ValueError(f"cache overflow: {prompt_len} prompt + {max_new_tokens} new tokens + one round's "
                         f"{method.shape.nodes + 1}-slot verification block need {need} slots, the cache has {slots}")
    for who, cfg in (("target", target_cfg), ("draft", drafter.cfg)):
        if prompt_len + max_new_tokens + method.shape.depth > cfg.max_position_embeddings:
            raise ValueError(f"prompt too long: {prompt_len} prompt + {max_new_tokens} new tokens + "
                             f"{method.shape.depth} draft positions exceed the {who}'s "
                             f"{cfg.max_position_embeddings} positions")
    return SpecSpec(target_cfg, drafter, method, max_new_tokens, slots, drafter.cache_slots(slots, method.shape),
                    sampling, tuple(eos_ids), plan)


def pad_for(spec: SpecSpec, prompts: Sequence[Sequence[int]]) -> tuple[jax.Array, jax.Array]:
    toks, lens, _ = pad_prompts(prompts, spec.target, spec.max_new_tokens, spec.max_len)
    return jnp.asarray(toks), jnp.asarray(lens)


def speculate(target, draft, prompts: Sequence[Sequence[int]], *, method: SpecMethod = chain(4),
              sampling: SamplingConfig = GREEDY, max_new_tokens: int = 128, eos_ids: Sequence[int] = (),
              key: jax.Array | None = None, drafter=None) -> SpecOutput:
    """Speculative generation for a batch of token-id prompts.

    target, draft: `Model`s (or loaded models: anything with .params, .cfg, optional .plan / .tokenizer);
    `drafter` defaults to `DraftModel(draft.cfg, draft.plan)`; an unbound `EasySpec(...)` is bound to the
    draft (and the mesh of its plan) here. `draft=None` with a `drafter` that needs no draft model (a
    self-drafter, which reads the target) binds it to the target. Greedy output is token-identical to
    vanilla greedy decoding of the target; sampled output is distributed as the target's samples."""
    if draft is None:
        if drafter is None:
            raise ValueError("speculate needs a draft model or a drafter that works without one (draft=None)")
        draft = Model(None, target.cfg, getattr(target, "plan", None))  # the drafter's params: none of its own
    check_vocab(target.cfg, draft.cfg, getattr(target, "tokenizer", None), getattr(draft, "tokenizer", None))
    need = cache_slots_needed(max((len(p) for p in prompts), default=0), max_new_tokens, method.shape)
    drafter = bind_drafter(drafter, draft, target.params, method, cache_slots(need))
    spec = make_spec(target.cfg, drafter, method, prompt_len=max(len(p) for p in prompts) if prompts else 0,
                     max_new_tokens=max_new_tokens, sampling=sampling, eos_ids=eos_ids,
                     plan=getattr(target, "plan", None))
    toks, lens = pad_for(spec, prompts)
    state = run_speculation(target.params, drafter.prepare_for(draft.params, target.params), toks, lens,
                            jax.random.key(0) if key is None else key, spec=spec)
    return SpecOutput(output_ids(state), summarize(state.stats),
                      [summarize(state.stats, [i]) for i in range(len(prompts))], state)
