"""Vanilla decoding: prefill, then a `lax.while_loop` over tokens on device (no host sync per token).

Two drivers over the same step, as in gemma's sampler:
  * `generate` — one jitted call (prefill + loop); `prefill` and `decode_loop` are its two halves,
    jitted separately so that benchmarks can time prefill apart (state donated between them);
  * streaming — a Python loop over the jitted `decode_step` (cache donated): not here but the one
    streaming driver of every method, `runner.AotRunner.stream` (`VanillaRunner(...).stream(prompts)`),
    which the library, the CLI's progress bar and the benchmarks share.

Lower bound of a decode step: (weight bytes + KV bytes read) / memory bandwidth."""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxspec.cache import KVCache, init_cache
from jaxspec.config import ModelConfig
from jaxspec.distributed import to_host
from jaxspec.model import forward, forward_prompt
from jaxspec.params import Params
from jaxspec.sampling import GREEDY, SamplingConfig, sample
from jaxspec.sharding import ShardingPlan, constrain_cache, constrain_rows

PAD = -1  # fills token slots after a row's end


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DecodeState:
    cache: KVCache
    tokens: jax.Array  # i32[B, N]   generated tokens, PAD after a row stops
    last: jax.Array  # i32[B]      the newest token (input of the next step)
    done: jax.Array  # bool[B]
    num: jax.Array  # i32[B]      tokens generated per row (EOS included)
    step: jax.Array  # i32[]       index of the next token to produce
    key: jax.Array


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
    """Static description of one generation: hashable, a static jit argument."""

    cfg: ModelConfig
    max_new_tokens: int
    max_len: int  # cache slots per row
    sampling: SamplingConfig = GREEDY
    eos_ids: tuple[int, ...] = ()
    plan: ShardingPlan | None = None


def bucket(n: int, minimum: int = 16) -> int:
    """Round up to a power of two (bounds recompiles over cache sizes)."""
    return max(minimum, 1 << (max(n, 1) - 1).bit_length())


def cache_slots(need: int) -> int:
    """The one rounding rule for KV cache sizes (vanilla, speculative, CLI, benchmarks): `need` slots
    rounded up to a multiple of 128. Every decode step's attention reads the whole cache, so a power of
    two would cost up to twice the reads; multiples of 128 still bound the recompiles."""
    return -(-max(need, 1) // 128) * 128


def prompt_width(n: int, step: int = 32) -> int:
    """Padded prefill width: a power of two up to `step`, then a multiple of `step`. Prefill is
    compute-bound, so padding 130 tokens to 256 would double its cost; 160 wastes 19%."""
    return bucket(n) if n <= step else -(-n // step) * step


def pad_prompts(
    prompts: Sequence[Sequence[int]], cfg: ModelConfig, max_new_tokens: int, max_len: int | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Right-pad token lists to a bucketed width. Returns (i32[B, P], lengths i32[B], cache slots).

    Raises ValueError for an empty prompt, a token outside the vocab, or a prompt too long for the
    cache or the model's positions."""
    if not prompts:
        raise ValueError("no prompts given")
    lens = np.array([len(p) for p in prompts], np.int32)
    if (lens == 0).any():
        raise ValueError(f"prompt {int(np.argmin(lens))} is empty")
    for i, p in enumerate(prompts):
        bad = [t for t in p if not 0 <= t < cfg.vocab_size]
        if bad:
            raise ValueError(f"prompt {i} has token ids outside the vocab [0, {cfg.vocab_size}): {bad[:5]}")
    need = int(lens.max()) + max_new_tokens
    if need > cfg.max_position_embeddings:
        raise ValueError(
            f"prompt too long: {int(lens.max())} prompt + {max_new_tokens} new tokens exceeds the "
            f"model's {cfg.max_position_embeddings} positions"
        )
    slots = max_len if max_len is not None else cache_slots(need)
    if need > slots:
        raise ValueError(
            f"prompt too long for the cache: {int(lens.max())} + {max_new_tokens} new tokens "
            f"> {slots} slots (cache overflow)"
        )
    width = min(prompt_width(int(lens.max())), slots)
    out = np.zeros((len(prompts), width), np.int32)
    for i, p in enumerate(prompts):
        out[i, : len(p)] = p
    return out, lens, slots


def is_eos(tok: jax.Array, eos_ids: tuple[int, ...]) -> jax.Array:
    if not eos_ids:
        return jnp.zeros(tok.shape, bool)
    return jnp.isin(tok, jnp.asarray(eos_ids, jnp.int32))


def _laid_out(s: DecodeState, spec: DecodeSpec) -> DecodeState:
    """The entry points' output layout (sharding.constrain_rows): the cache per the plan, the rest per row."""
    if spec.plan is None:
        return s
    return DecodeState(
        constrain_cache(s.cache, spec.plan),
        *constrain_rows((s.tokens, s.last, s.done, s.num, s.step, s.key), spec.plan),
    )


@functools.partial(jax.jit, static_argnames=("spec",))
def prefill(
    params: Params, prompts: jax.Array, prompt_lens: jax.Array, key: jax.Array, *, spec: DecodeSpec
) -> DecodeState:
    """Run the padded prompts i32[B, P] and sample the first token of every row."""
    B = prompts.shape[0]
    cache = constrain_cache(init_cache(spec.cfg, B, spec.max_len), spec.plan)
    logits, cache = forward_prompt(params, prompts, prompt_lens, cache, spec.cfg)
    key, sub = jax.random.split(key)
    first = sample(sub, logits[:, 0], spec.sampling)
    tokens = jnp.full((B, spec.max_new_tokens), PAD, jnp.int32).at[:, 0].set(first)
    done = is_eos(first, spec.eos_ids) | (spec.max_new_tokens <= 1)
    return _laid_out(DecodeState(cache, tokens, first, done, jnp.ones((B,), jnp.int32), jnp.int32(1), key), spec)


def _step(params: Params, s: DecodeState, spec: DecodeSpec) -> DecodeState:
    logits, cache, _ = forward(params, s.last[:, None], s.cache, spec.cfg)
    cache = constrain_cache(cache, spec.plan)
    key, sub = jax.random.split(s.key)
    nxt = sample(sub, logits[:, 0], spec.sampling)
    live = ~s.done
    tokens = s.tokens.at[:, s.step].set(jnp.where(live, nxt, PAD))
    done = s.done | is_eos(nxt, spec.eos_ids) | (s.step + 1 >= spec.max_new_tokens)
    return DecodeState(cache, tokens, jnp.where(live, nxt, s.last), done, s.num + live, s.step + 1, key)


@functools.partial(jax.jit, static_argnames=("spec",), donate_argnums=(1,))
def decode_loop(params: Params, state: DecodeState, *, spec: DecodeSpec) -> DecodeState:
    """Generate until every row is done, entirely on device."""

    def cond(s):
        return (s.step < spec.max_new_tokens) & ~jnp.all(s.done)

    return _laid_out(lax.while_loop(cond, lambda s: _step(params, s, spec), state), spec)


@functools.partial(jax.jit, static_argnames=("spec",), donate_argnums=(1,))
def decode_step(params: Params, state: DecodeState, *, spec: DecodeSpec) -> DecodeState:
    """One token for every row (the step of `VanillaRunner.stream`); the state, cache included, is donated."""
    return _laid_out(_step(params, state, spec), spec)


@functools.partial(jax.jit, static_argnames=("spec",))
def generate(
    params: Params, prompts: jax.Array, prompt_lens: jax.Array, key: jax.Array, *, spec: DecodeSpec
) -> DecodeState:
    """Prefill + on-device loop in one jitted call. Returns the final state: `.tokens` i32[B, N]
    (PAD after each row's end) and `.num` i32[B]."""
    state = prefill.__wrapped__(params, prompts, prompt_lens, key, spec=spec)
    return decode_loop.__wrapped__(params, state, spec=spec)


def output_ids(state: DecodeState) -> list[list[int]]:
    """Per-row generated token ids (EOS included, padding dropped)."""
    toks, num = to_host((state.tokens, state.num))  # gathered across processes when multi-host
    return [toks[i, : num[i]].tolist() for i in range(toks.shape[0])]
