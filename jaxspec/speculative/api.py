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
from jaxspec.speculative.engine import SpecMethod, SpecSpec, SpecState, cache_slots_needed, run_speculation
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
        raise ValueError(
            f"vocab mismatch: the target has {target_cfg.vocab_size} token ids, the draft "
            f"{draft_cfg.vocab_size}; a draft model must share the target's vocabulary"
        )
    if target_tokenizer is not None and draft_tokenizer is not None:
        a, b = target_tokenizer.get_vocab(), draft_tokenizer.get_vocab()
        if a != b:
            diff = sorted((t for t in set(a) | set(b) if a.get(t) != b.get(t)), key=lambda t: (a.get(t, -1), t))
            eg = ", ".join(f"{t!r}: target {a.get(t)}, draft {b.get(t)}" for t in diff[:3])
            raise ValueError(
                f"vocab mismatch: the target and draft token tables differ in {len(diff)} entries "
                f"({eg}); a draft model must share the target's vocabulary"
            )


def bind_drafter(
    drafter,
    draft,
    target_params=None,
    method=None,
    max_len: int = 512,
    measure_costs: bool = False,
    target_plan: ShardingPlan | None = None,
):
    """The drafter ready to run (the seam's host-side steps, seam.py): None → `DraftModel` over `draft`;
    `method`'s shape checked against the drafter's (before anything is bound or measured); an unbound
    one bound to `draft`'s config and mesh — the target's mesh (`target_plan`) when the draft has none, so
    a drafter that places its own params (EasySpec: replicated, layer-parallel) runs on the target's
    mesh, not silently on one device (a self-drafter's `draft` is the target); the target's head
    checked; costs it prices rounds with (DEL's measured cost model) for `method`'s depth and a cache of
    `max_len` slots, read from the disk cache (logged) or, only with `measure_costs`, timed on
    `target_params`."""
    plan = getattr(draft, "plan", None)  # a Model / LoadedModel; a bare one may have no plan
    if drafter is None:
        drafter = DraftModel()
    if method is not None:
        drafter.check_method(method)
    if not drafter.bound:
        mesh = next((p.mesh for p in (plan, target_plan) if p is not None), None)
        drafter = drafter.bind(draft.cfg, mesh, plan=plan)
    if target_params is not None:
        drafter.check_head(target_params)
        drafter = drafter.calibrate(
            target_params,
            max_len=max_len,
            measure=measure_costs,
            **({} if method is None else {"depth": method.shape.depth}),
        )
    return drafter


def make_spec(
    target_cfg: ModelConfig,
    drafter,
    method: SpecMethod,
    *,
    prompt_len: int,
    max_new_tokens: int,
    sampling: SamplingConfig = GREEDY,
    eos_ids: Sequence[int] = (),
    plan: ShardingPlan | None = None,
    max_len: int | None = None,
) -> SpecSpec:
    """The static spec for prompts up to `prompt_len` tokens; `max_len` fixes the cache slots (e.g. one
    size for a whole benchmark), else the need is bucketed. Raises ValueError for a cache or position
    overflow and for a vocab mismatch."""
    check_vocab(target_cfg, drafter.cfg)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    need = cache_slots_needed(prompt_len, max_new_tokens, method.shape)
    slots = cache_slots(need) if max_len is None else max_len
    if need > slots:
        raise ValueError(
            f"cache overflow: {prompt_len} prompt + {max_new_tokens} new tokens + one round's "
            f"{method.shape.nodes + 1}-slot verification block need {need} slots, the cache has {slots}"
        )
    for who, cfg in (("target", target_cfg), ("draft", drafter.cfg)):
        if prompt_len + max_new_tokens + method.shape.depth > cfg.max_position_embeddings:
            raise ValueError(
                f"prompt too long: {prompt_len} prompt + {max_new_tokens} new tokens + "
                f"{method.shape.depth} draft positions exceed the {who}'s "
                f"{cfg.max_position_embeddings} positions"
            )
    return SpecSpec(
        target_cfg,
        drafter,
        method,
        max_new_tokens,
        slots,
        drafter.cache_slots(slots, method.shape),
        sampling,
        tuple(eos_ids),
        plan,
    )


def pad_for(spec: SpecSpec, prompts: Sequence[Sequence[int]]) -> tuple[jax.Array, jax.Array]:
    toks, lens, _ = pad_prompts(prompts, spec.target, spec.max_new_tokens, spec.max_len)
    return jnp.asarray(toks), jnp.asarray(lens)


def resolve_method(method, drafter, options=None, draft: bool | None = None):
    """(SpecMethod, drafter) for `speculate` / `make_runner`: `method` a name of the registry
    (jaxspec.methods: "chain", "del", "ngram", … with `options`) or a SpecMethod; None: the default
    shape of `drafter`'s method (a bare DraftModel or none: chain(7))."""
    from jaxspec import methods

    if isinstance(method, str):
        r = methods.resolve(method, draft=draft, **dict(options or {}))
        if r.method is None:
            raise ValueError(f"method {method!r} drafts nothing: decode with jaxspec.generate or VanillaRunner")
        return r.method, drafter if drafter is not None else r.drafter
    if options:
        raise ValueError(
            "options go with a method name (method='del', options={...}); with a shape, configure the drafter itself"
        )
    if method is None:
        method = methods.default_for(drafter).method()
    if not isinstance(method, SpecMethod):
        raise ValueError(
            f"method must be a registry name ({', '.join(methods.METHODS)}) or a SpecMethod "
            f"(chain(k), tree(depth, width)), got {method!r}"
        )
    return method, drafter


def speculate(
    target,
    draft,
    prompts: Sequence[Sequence[int]],
    *,
    method: SpecMethod | str | None = None,
    sampling: SamplingConfig = GREEDY,
    max_new_tokens: int = 128,
    eos_ids: Sequence[int] = (),
    key: jax.Array | None = None,
    drafter=None,
    options: dict | None = None,
    measure_costs: bool = False,
) -> SpecOutput:
    """Speculative generation for a batch of token-id prompts.

    target, draft: `Model`s (or loaded models: anything with .params, .cfg, optional .plan / .tokenizer).
    `method`: a registry name ("chain", "tree", "easyspec", "ls", "fs", "dv", "del", "ngram", "cascade";
    jaxspec.methods, its `options` as keywords in `options`) or a shape (chain(k), tree(depth, width));
    None: the default shape of `drafter`'s method, as the command line's (DEL: chain(18)). `drafter`
    defaults to the method's (a `DraftModel` over `draft` for chain / tree); an unbound one is bound
    here (EasySpec to the draft and the mesh of its plan, or the target's when the draft has none; a
    drafter bound and `prepare`d once by the caller skips that on every call: `es = EasySpec().bind(d.cfg,
    mesh)`, `speculate(t, Model(es.prepare(d.params), d.cfg), ..., drafter=es)`). `draft=None` with a
    method or drafter that needs no draft model (a self-drafter, which reads the target; prompt lookup)
    binds it to the target.
    `measure_costs`: a drafter that prices rounds by costs measured on this machine (DEL's default) may
    time them now when they are not on disk yet (25-110 s); otherwise such a cost must be there already.
    Greedy output is token-identical to vanilla greedy decoding of the target; sampled output is
    distributed as the target's samples."""
    method, drafter = resolve_method(method, drafter, options, draft is not None if isinstance(method, str) else None)
    if draft is None:
        if drafter is None:
            raise ValueError("speculate needs a draft model or a drafter that works without one (draft=None)")
        draft = Model(None, target.cfg, getattr(target, "plan", None))  # the drafter's params: none of its own
    check_vocab(target.cfg, draft.cfg, getattr(target, "tokenizer", None), getattr(draft, "tokenizer", None))
    need = cache_slots_needed(max((len(p) for p in prompts), default=0), max_new_tokens, method.shape)
    drafter = bind_drafter(
        drafter, draft, target.params, method, cache_slots(need), measure_costs, getattr(target, "plan", None)
    )
    spec = make_spec(
        target.cfg,
        drafter,
        method,
        prompt_len=max(len(p) for p in prompts) if prompts else 0,
        max_new_tokens=max_new_tokens,
        sampling=sampling,
        eos_ids=eos_ids,
        plan=getattr(target, "plan", None),
    )
    toks, lens = pad_for(spec, prompts)
    state = run_speculation(
        target.params,
        drafter.prepare_for(draft.params, target.params),
        toks,
        lens,
        jax.random.key(0) if key is None else key,
        spec=spec,
    )
    return SpecOutput(
        output_ids(state), summarize(state.stats), [summarize(state.stats, [i]) for i in range(len(prompts))], state
    )
