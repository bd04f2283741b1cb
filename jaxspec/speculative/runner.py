"""`SpecRunner`: the timed, AOT-compiled driver of speculative generation (library, CLI and benchmarks),
with the same interface as `VanillaRunner`: it supplies only the compiled round loop and the two phases
of a round; `run` (one on-device loop) and `stream` (the timing mode: one host sync per round, drafting
and verification timed apart) are `AotRunner`'s."""

from __future__ import annotations

from typing import Sequence

import jax

from jaxspec.config import ModelConfig
from jaxspec.decode import cache_slots
from jaxspec.distributed import to_host
from jaxspec.runner import AotRunner, Phases, RunResult
from jaxspec.sampling import GREEDY, SamplingConfig
from jaxspec.sharding import ShardingPlan
from jaxspec.speculative.api import bind_drafter, make_spec, resolve_method
from jaxspec.speculative.drafters import DraftModel
from jaxspec.speculative.engine import SpecMethod, draft_phase, spec_loop, spec_prefill, verify_phase
from jaxspec.speculative.metrics import summarize


class SpecRunner(AotRunner):
    prefill_fn = staticmethod(spec_prefill)

    def __init__(
        self,
        target_params,
        target_cfg: ModelConfig,
        draft_params,
        draft_cfg: ModelConfig,
        *,
        method: SpecMethod,
        max_new_tokens: int,
        max_len: int,
        sampling: SamplingConfig = GREEDY,
        eos_ids: Sequence[int] = (),
        plan: ShardingPlan | None = None,
        draft_plan: ShardingPlan | None = None,
        drafter=None,
    ):
        drafter = DraftModel(draft_cfg, draft_plan) if drafter is None else drafter
        spec = make_spec(
            target_cfg,
            drafter,
            method,
            prompt_len=1,
            max_new_tokens=max_new_tokens,
            sampling=sampling,
            eos_ids=eos_ids,
            plan=plan,
            max_len=max_len,
        )
        super().__init__((target_params, drafter.prepare_for(draft_params, target_params)), target_cfg, spec)
        self.method = method.name

    def _inputs(self, prompts: Sequence[Sequence[int]]):
        s = self.spec  # the size checks for these prompts (cache overflow, positions)
        make_spec(
            s.target,
            s.drafter,
            s.method,
            prompt_len=max(map(len, prompts), default=0),
            max_new_tokens=s.max_new_tokens,
            sampling=s.sampling,
            eos_ids=s.eos_ids,
            plan=s.plan,
            max_len=s.max_len,
        )
        return super()._inputs(prompts)

    def _compile_loop(self, state):
        return spec_loop.lower(*self.args, state, spec=self.spec).compile()

    def _compile_phases(self, state) -> Phases:
        """A round as two phases, so that the stream times drafting and verification apart."""
        tp, dp = self.args
        draft = draft_phase.lower(tp, dp, state, spec=self.spec).compile()
        _, t = jax.eval_shape(lambda a, b, s: draft_phase(a, b, s, spec=self.spec), tp, dp, state)
        return ("draft", draft), ("verify", verify_phase.lower(tp, dp, state, t, spec=self.spec).compile())

    def _result(self, state, prefill_s, decode_s, compile_s) -> RunResult:
        res = super()._result(state, prefill_s, decode_s, compile_s)
        res.stats = summarize(state.stats)
        res.stats["per_row"] = [summarize(state.stats, [i]) for i in range(len(res.output_ids))]
        res.drafter = self.spec.drafter.report(to_host(state.draft_state)) or None
        return res


def runner_slots(prompt_len: int, max_new_tokens: int, method: SpecMethod | None) -> int:
    """Cache slots for prompts up to `prompt_len` tokens: the prompt, the output and (speculative) one
    round's verification block past the end, bucketed (decode.cache_slots)."""
    extra = 0 if method is None else method.shape.nodes + 1
    return cache_slots(prompt_len + max_new_tokens + extra)


def make_runner(
    target,
    draft,
    method: SpecMethod | str | None,
    *,
    max_new_tokens: int,
    max_len: int | None = None,
    prompt_len: int | None = None,
    sampling: SamplingConfig = GREEDY,
    eos_ids: Sequence[int] = (),
    drafter=None,
    options: dict | None = None,
    measure_costs: bool = False,
):
    """A `VanillaRunner` (method None or "vanilla") or a `SpecRunner` for loaded models (.params, .cfg,
    .plan). `method`, `drafter`, `options`, `measure_costs`: as for `speculate` (a registry name or a shape). The cache
    holds `max_len` slots, or by default what prompts of up to `prompt_len` tokens need (runner_slots)."""
    from jaxspec.runner import VanillaRunner

    if method == "vanilla":
        method = None
    elif isinstance(method, str):
        method, drafter = resolve_method(method, drafter, options, draft is not None)
    elif options:
        raise ValueError("options go with a method name (method='del', options={...})")
    if max_len is None:
        if prompt_len is None:
            raise ValueError("make_runner needs max_len (cache slots) or prompt_len (the longest prompt's tokens)")
        max_len = runner_slots(prompt_len, max_new_tokens, method)
    if method is None:
        return VanillaRunner(
            target.params,
            target.cfg,
            max_new_tokens=max_new_tokens,
            max_len=max_len,
            sampling=sampling,
            eos_ids=eos_ids,
            plan=target.plan,
        )
    if draft is None and (drafter is None or drafter.needs_draft_model):
        raise ValueError(f"method {method.name!r} needs a draft model (--draft NAME)")
    source = target if draft is None else draft  # a self-drafter (no draft model) binds to the target
    return SpecRunner(
        target.params,
        target.cfg,
        None if draft is None else draft.params,
        source.cfg,
        method=method,
        max_new_tokens=max_new_tokens,
        max_len=max_len,
        sampling=sampling,
        eos_ids=eos_ids,
        plan=target.plan,
        draft_plan=source.plan,
        drafter=bind_drafter(drafter, source, target.params, method, max_len, measure_costs, target.plan),
    )
