"""Logits processing (temperature, top-k, top-p) and sampling with explicit PRNG keys.

`processed_logprobs` is the exact distribution a token is drawn from; speculative acceptance must use
this same distribution for both draft and target (the bug behind HF #47932 was to not do so)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


GREEDY = SamplingConfig()


def processed_logprobs(logits: jax.Array, cfg: SamplingConfig) -> jax.Array:
    """f32[..., V] logits → log-probabilities after temperature, top-k and top-p (-inf outside)."""
    x = logits.astype(jnp.float32) / (cfg.temperature if cfg.temperature > 0 else 1.0)
    if cfg.top_k > 0 and cfg.top_k < x.shape[-1]:
        kth = jax.lax.top_k(x, cfg.top_k)[0][..., -1:]
        x = jnp.where(x < kth, -jnp.inf, x)
    if cfg.top_p < 1.0:
        order = jnp.argsort(-x, axis=-1)
        sorted_x = jnp.take_along_axis(x, order, axis=-1)
        probs = jax.nn.softmax(sorted_x, axis=-1)
        # keep the smallest prefix whose mass reaches top_p (the token crossing it is kept)
        before = jnp.cumsum(probs, axis=-1) - probs
        keep_sorted = before < cfg.top_p
        keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)
        x = jnp.where(keep, x, -jnp.inf)
    return jax.nn.log_softmax(x, axis=-1)


def sample(key: jax.Array, logits: jax.Array, cfg: SamplingConfig) -> jax.Array:
    """f32[B, V] → i32[B]: argmax when greedy, else a draw from `processed_logprobs`."""
    if cfg.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, processed_logprobs(logits, cfg), axis=-1).astype(jnp.int32)
