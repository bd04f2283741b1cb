"""The timed drivers of generation, shared by the library, the CLI and the benchmarks.

Compilation is done ahead of time (`.lower().compile()`) per prompt-width bucket, so that compile
time, prefill time and decode time are measured apart and never mixed: a benchmark's first prompt is
not slower than the others. Every method (vanilla here, speculative in `speculative/runner.py`) has
two drivers, both in `AotRunner`:
  * `run` — prefill, then the method's whole decode as one on-device loop (no host sync per token);
  * `stream` — the one streaming driver: prefill, then the method's compiled step (vanilla: one token;
    speculative: one round, drafting and verification as two phases timed apart) called from Python,
    yielding (tokens so far, `RunResult` so far) after prefill and after every step. One host sync per
    step by design: progress display (the CLI's bar) and per-phase timing (`bench --timing`).
A method supplies only its compiled loop and its step's phases; the loops are written once here."""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.config import ModelConfig
from jaxspec.decode import DecodeSpec, decode_loop, decode_step, output_ids, pad_prompts, prefill
from jaxspec.distributed import to_host
from jaxspec.sampling import GREEDY, SamplingConfig
from jaxspec.sharding import ShardingPlan, bytes_per_device


@dataclasses.dataclass
class RunResult:
    output_ids: list[list[int]]  # per row, EOS included
    prefill_s: float
    decode_s: float  # after prefill: the tokens 2..N (the first comes from prefill)
    compile_s: float  # compile time this call triggered (0 once its shapes are compiled)
    stats: dict | None = None  # speculative methods: acceptance statistics per row (metrics.summarize)
    draft_s: float | None = None  # stream of speculative methods: the `draft` / `verify` phases' seconds
    verify_s: float | None = None
    drafter: dict | None = None  # what the drafter reports of its own run (DEL: per-round exit and τ traces)

    @property
    def new_tokens(self) -> int:
        return sum(len(r) for r in self.output_ids)

    @property
    def wall_s(self) -> float:
        return self.prefill_s + self.decode_s


Phases = tuple[tuple[str, object], ...]  # a step as (name, compiled executable) pairs, run in order


def _timed(fn, *args):
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t


def _run_phases(phases: Phases, args: tuple, state) -> tuple[object, dict[str, float]]:
    """One step: each phase gets the param trees and the previous phase's outputs (a tuple is passed on
    whole: drafting hands verification its tree) and is timed alone. Returns the new state and each
    phase's seconds."""
    carry, seconds = (state,), {}
    for name, fn in phases:
        out, seconds[name] = _timed(fn, *args, *carry)
        carry = out if isinstance(out, tuple) else (out,)
    (state,) = carry
    return state, seconds


def _finished(state) -> bool:
    """Every row done: the one host sync per step. `done` also covers the token budget (both methods set
    it at `max_new_tokens`), as in the on-device loops' conditions."""
    return bool(np.all(to_host(state.done)))


class AotRunner:
    """Shared driver: subclasses set `method`, `spec` (static), `args` (the param trees passed before the
    inputs), `prefill_fn` (jitted, `spec=` static), `_compile_loop` (the whole decode) and
    `_compile_phases` (one streaming step); `run` and `stream` are written once, here."""

    method = "?"
    prefill_fn = None

    def __init__(self, args: tuple, cfg: ModelConfig, spec):
        self.args, self.cfg, self.spec = args, cfg, spec
        self._prefill: dict[tuple, object] = {}
        self._loop: dict[int, object] = {}
        self._phases: dict[int, Phases] = {}

    def _result(self, state, prefill_s: float, decode_s: float, compile_s: float) -> RunResult:
        return RunResult(output_ids(state), prefill_s, decode_s, compile_s)

    def _inputs(self, prompts: Sequence[Sequence[int]]):
        toks, lens, _ = pad_prompts(prompts, self.cfg, self.spec.max_new_tokens, self.spec.max_len)
        return jnp.asarray(toks), jnp.asarray(lens)

    def prompt_shape(self, prompts: Sequence[Sequence[int]]) -> tuple[int, int]:
        """(batch, padded width): the prefill shape these prompts run with — prompts of one shape share
        one compiled prefill (the size checks run as for `run`)."""
        return tuple(self._inputs(prompts)[0].shape)

    def _compile(self, toks, lens, key, streaming: bool = False) -> float:
        """AOT-compile prefill and the decode loop (or the streaming step's phases) for these shapes;
        returns seconds spent."""
        t = time.perf_counter()
        shape = toks.shape
        table, build = (self._phases, self._compile_phases) if streaming else (self._loop, self._compile_loop)
        if shape in self._prefill and shape[0] in table:
            return 0.0
        if shape not in self._prefill:
            self._prefill[shape] = self.prefill_fn.lower(*self.args, toks, lens, key, spec=self.spec).compile()
        if shape[0] not in table:
            # abstract evaluation of the *jitted* prefill: nothing runs (calling the compiled
            # executable here would run a real prefill, asynchronously, under the timed one)
            state = jax.eval_shape(functools.partial(self.prefill_fn, spec=self.spec), *self.args, toks, lens, key)
            table[shape[0]] = build(state)
        return time.perf_counter() - t

    def compile(self, prompts: Sequence[Sequence[int]], streaming: bool = False) -> float:
        toks, lens = self._inputs(prompts)
        return self._compile(toks, lens, jax.random.key(0), streaming)

    def device_bytes(self, batch: int = 1) -> dict[str, int]:
        """What one device holds while the compiled decode loop for `batch` rows runs (compile it first):
        the target's weights (`args[0]`) and the draft's (`args[1]`, where there is one) from their
        shardings (`target_whole`: all of the target's), and XLA's `memory_analysis` of the whole loop —
        `state` (its arguments less the weights: caches and counters), `temporaries`, `outputs`, `aliased`;
        `peak` = arguments + temporaries + outputs − aliased (the loop donates its state)."""
        stats = self._loop[batch].memory_analysis()
        weights = [bytes_per_device(a) for a in self.args]
        devices = {d for x in jax.tree.leaves(self.args[0]) for d in x.sharding.device_set}
        out = {"devices": len(devices), "target_weights": weights[0]}
        out["target_whole"] = sum(x.nbytes for x in jax.tree.leaves(self.args[0]))
        if len(weights) > 1:
            out["draft_weights"] = weights[1]
        arguments, temporaries = stats.argument_size_in_bytes, stats.temp_size_in_bytes
        out.update(
            state=arguments - sum(weights),
            temporaries=temporaries,
            outputs=stats.output_size_in_bytes,
            aliased=stats.alias_size_in_bytes,
            peak=arguments + temporaries + stats.output_size_in_bytes - stats.alias_size_in_bytes,
        )
        return out

    def warmup(self, prompt_sets: Sequence[Sequence[Sequence[int]]]) -> None:
        """Compile and run once every shape these batches need (an executable's first run pays
        one-off allocation costs): one prefill per width bucket, one decode loop per batch size."""
        key, seen = jax.random.key(0), set()
        for prompts in prompt_sets:
            toks, lens = self._inputs(prompts)
            if toks.shape in seen:
                continue
            self._compile(toks, lens, key)
            state = self._prefill[toks.shape](*self.args, toks, lens, key)
            if toks.shape[0] not in {s[0] for s in seen}:
                state = self._loop[toks.shape[0]](*self.args, state)
            jax.block_until_ready(state)
            seen.add(toks.shape)

    def run(self, prompts: Sequence[Sequence[int]], key: jax.Array | None = None) -> RunResult:
        """Generate for a batch of token-id prompts; everything after prefill runs on device."""
        key = jax.random.key(0) if key is None else key
        toks, lens = self._inputs(prompts)
        compile_s = self._compile(toks, lens, key)
        state, prefill_s = _timed(self._prefill[toks.shape], *self.args, toks, lens, key)
        state, decode_s = _timed(self._loop[toks.shape[0]], *self.args, state)
        return self._result(state, prefill_s, decode_s, compile_s)

    def stream(
        self, prompts: Sequence[Sequence[int]], key: jax.Array | None = None
    ) -> Iterator[tuple[list[list[int]], RunResult]]:
        """Generate as `run` does (the same tokens for the same key), yielding (tokens so far per row,
        result so far) after prefill and after every step. A phase's seconds add up in the result's
        `<phase>_s` field (vanilla's one phase is `decode` itself; speculative: `draft_s`, `verify_s`),
        `decode_s` is their sum."""
        key = jax.random.key(0) if key is None else key
        toks, lens = self._inputs(prompts)
        compile_s = self._compile(toks, lens, key, streaming=True)
        state, prefill_s = _timed(self._prefill[toks.shape], *self.args, toks, lens, key)
        phases = self._phases[toks.shape[0]]
        spent = {name: 0.0 for name, _ in phases}
        while True:
            res = self._result(state, prefill_s, sum(spent.values()), compile_s)
            # replace, not setattr: a phase named after no RunResult field fails here instead of vanishing
            res = dataclasses.replace(res, **{f"{name}_s": secs for name, secs in spent.items()})
            yield res.output_ids, res
            if _finished(state):
                return
            state, seconds = _run_phases(phases, self.args, state)
            spent = {name: spent[name] + seconds[name] for name in spent}


class VanillaRunner(AotRunner):
    """Plain autoregressive decoding with one model; also the library's streaming call
    (`VanillaRunner(params, cfg, ...).stream(prompts, key)`). `max_len` fixes the cache so that every
    prompt of a benchmark shares one compiled decode loop (prompt widths are bucketed, see `prompt_width`)."""

    method = "vanilla"
    prefill_fn = staticmethod(prefill)

    def __init__(
        self,
        params,
        cfg: ModelConfig,
        *,
        max_new_tokens: int,
        max_len: int,
        sampling: SamplingConfig = GREEDY,
        eos_ids: Sequence[int] = (),
        plan: ShardingPlan | None = None,
    ):
        super().__init__((params,), cfg, DecodeSpec(cfg, max_new_tokens, max_len, sampling, tuple(eos_ids), plan))
        self.params = params

    def _compile_loop(self, state):
        return decode_loop.lower(self.params, state, spec=self.spec).compile()

    def _compile_phases(self, state) -> Phases:
        return (("decode", decode_step.lower(self.params, state, spec=self.spec).compile()),)
