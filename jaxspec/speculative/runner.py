"""`SpecRunner`: the timed, AOT-compiled driver of speculative generation (library, CLI and benchmarks),
with the same interface as `VanillaRunner`: it supplies only the compiled round loop and the two phases
of a round; `run` (one on-device loop) and `stream` (the timing mode: one host sync per round, drafting
and verification timed apart) are `AotRunner`'s."""
from __future__ import annotations

from typing import Sequence

import jax

from jaxspec.config import ModelConfig
from jaxspec.distributed import to_host
from jaxspec.runner import AotRunner, Phases, RunResult
from jaxspec.sampling import GREEDY, SamplingConfig
from jaxspec.sharding import ShardingPlan
from jaxspec.speculative.api import bind_drafter, make_spec
from jaxspec.speculative.drafters import DraftModel
from jaxspec.speculative.engine import SpecMethod, draft_phase, spec_loop, spec_prefill, verify_phase
from jaxspec.speculative.metrics import summarize


class SpecRunner(AotRunner):
    prefill_fn = staticmethod(spec_prefill)

    def __init__(self, target_params, target_cfg: ModelConfig, draft_params, draft_cfg: ModelConfig, *,
                 method: SpecMethod, max_new_tokens: int, max_len: int, sampling: SamplingConfig = GREEDY,
                 eos_ids: Sequence[int] = (), plan: ShardingPlan | None = None,
                 draft_plan: ShardingPlan | None = None, drafter=None):
        drafter = DraftModel(draft_cfg, draft_plan) if drafter is None else drafter
        spec = make_spec(target_cfg, drafter, method, prompt_len=1, max_new_tokens=max_new_tokens,
                         sampling=sampling, eos_ids=eos_ids, plan=plan, max_len=max_len)
        super().__init__((target_params, drafter.prepare_for(draft_params, target_params)), target_cfg, spec)
        self.method = method.name

    def _inputs(self, prompts: Sequence[Sequence[int]]):
        s = self.spec  # the size checks for these prompts (cache overflow, positions)
        make_spec(s.target, s.drafter, s.method, prompt_len=max(map(len, prompts), default=0),
                  max_new_tokens=s.max_new_tokens, sampling=s.sampling, eos_ids=s.eos_ids, plan=s.plan,
                  max_len=s.max_len)
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


def make_runner(target, draft, method: SpecMethod | None, *, max_new_tokens: int, max_len: int,
                sampling: SamplingConfig = GREEDY, eos_ids: Sequence[int] = (), drafter=None):
    """A `VanillaRunner` (method None) or a `SpecRunner` for loaded models (.params, .cfg, .plan);
    `drafter`: as for `speculate` (default DraftModel; an unbound EasySpec is bound to the draft)."""
    from jaxspec.runner import VanillaRunner
    if method is None:
        return VanillaRunner(target.params, target.cfg, max_new_tokens=max_new_tokens, max_len=max_len,
                             sampling=sampling, eos_ids=eos_ids, plan=target.plan)
    if draft is None and drafter is None:
        raise ValueError(f"method {method.name!r} needs a draft model (--draft NAME)")
    source = target if draft is None else draft  # a self-drafter (no draft model) binds to the target
    return SpecRunner(target.params, target.cfg, None if draft is None else draft.params, source.cfg,
                      method=method, max_new_tokens=max_new_tokens, max_len=max_len, sampling=sampling,
                      eos_ids=eos_ids, plan=target.plan, draft_plan=source.plan,
                      drafter=bind_drafter(drafter, source, target.params, method, max_len))
