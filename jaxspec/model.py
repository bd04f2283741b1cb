"""The decoder as plain functions: `embed`, `decoder_layer`, `run_layers` over any layer range,
`head` (final norm + LM head) and `forward`.

The layer loop is unrolled in Python over the per-layer list (see params.py for why). Layer ranges
are static; a range chosen at run time (DEL's exit) is selfspec/dynamic_exit.py's business: a
conditional per segment between candidate exits, not one per layer."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxspec.cache import KVCache
from jaxspec.config import ModelConfig
from jaxspec.layers import attention_block, linear, mlp_block, rms_norm
from jaxspec.masks import causal_mask
from jaxspec.params import Params


def embed(params: Params, tokens: jax.Array, cfg: ModelConfig) -> jax.Array:
    # tokens: i32[B, T] → [B, T, D] in cfg.dtype (checked here, at trace time: a bf16 model under an f32
    # config would promote every product to f32)
    table = params["embed"]
    if table.dtype != jnp.dtype(cfg.dtype):
        raise ValueError(
            f"the params are {table.dtype} but the model config says dtype={cfg.dtype}: load the "
            f"model with that dtype, or cfg.replace(dtype='{table.dtype}')"
        )
    return jnp.take(table, tokens, axis=0)


def decoder_layer(p: dict, x, k_cache, v_cache, positions, write_at, mask, cfg: ModelConfig):
    """x + attn(x), then + mlp(.): returns (x f32[B, T, D], k_cache, v_cache)."""
    a, k_cache, v_cache = attention_block(p, x, k_cache, v_cache, positions, write_at, mask, cfg)
    x = x + a
    return x + mlp_block(p, x, cfg), k_cache, v_cache


def run_layers(
    params: Params,
    x: jax.Array,
    cache: KVCache,
    positions: jax.Array,
    mask: jax.Array,
    cfg: ModelConfig,
    start: int = 0,
    stop: int | None = None,
    return_hiddens: bool = False,
):
    """Layers [start, stop) (static), writing K/V at `cache.lengths`.

    `cache` holds the caches of *all* layers (index l is layer l). Returns (x, cache, hiddens) where
    hiddens is the list of each run layer's output (empty unless return_hiddens)."""
    stop = cfg.num_layers if stop is None else stop
    if not 0 <= start <= stop <= cfg.num_layers:
        raise ValueError(f"layer range [{start}, {stop}) is outside [0, {cfg.num_layers})")
    ks, vs = list(cache.k), list(cache.v)
    hiddens = []
    for l in range(start, stop):
        x, ks[l], vs[l] = decoder_layer(params["layers"][l], x, ks[l], vs[l], positions, cache.lengths, mask, cfg)
        if return_hiddens:
            hiddens.append(x)
    return x, cache.replace(k=tuple(ks), v=tuple(vs)), hiddens


def head(params: Params, x: jax.Array, cfg: ModelConfig) -> jax.Array:
    """Final norm + LM head: [B, T, D] → logits f32[B, T, V] (tied heads reuse the embedding; a draft's
    hot-vocabulary head computes only its tokens' logits, the others are -inf). The logits
    come out of the product in f32 whatever the dtype: bf16 logits would tie where f32 ones do not."""
    h = rms_norm(x, params["final_norm"], cfg.rms_norm_eps)
    if "hot_head" in params:  # a draft's hot-vocabulary head (speculative/hot_vocab.py): V' rows read, not V;
        hot = params["hot_head"]  # the logits go back to their ids, -inf elsewhere (never drafted, q = 0)
        sub = linear(h, hot["w"], cfg.lax_precision, jnp.float32)  # [B, T, V']
        return jnp.full(sub.shape[:-1] + (cfg.vocab_size,), -jnp.inf, jnp.float32).at[..., hot["ids"]].set(sub)
    return linear(h, params["embed"] if cfg.tie_embeddings else params["lm_head"], cfg.lax_precision, jnp.float32)


def forward(
    params: Params,
    tokens: jax.Array,
    cache: KVCache,
    cfg: ModelConfig,
    *,
    positions=None,
    mask=None,
    advance=None,
    return_hiddens: bool = False,
    logits_at=None,
    window: int | None = None,
):
    """Run T new tokens through the whole model, writing K/V at slots `cache.lengths + t`.

    tokens: i32[B, T]; positions: i32[B, T] (default lengths + t); mask: bool[B, T, W] (default causal
    over the first W = `window` slots, default all S: a narrower window is only right when no query
    may see a slot at or beyond it);
    advance: i32[B] slots to add to `lengths` afterwards (default T: ragged prefill passes the true
    prompt lengths); logits_at: optional i32[B, N] token indices to compute logits for (saves the LM
    head on long prefills). Returns (logits f32[B, T or N, V], cache, hiddens)."""
    B, T = tokens.shape
    if positions is None:
        positions = cache.lengths[:, None] + jnp.arange(T, dtype=jnp.int32)[None, :]
    if mask is None:
        mask = causal_mask(cache.lengths, T, cache.max_len if window is None else window)
    x = embed(params, tokens, cfg)
    x, cache, hiddens = run_layers(params, x, cache, positions, mask, cfg, return_hiddens=return_hiddens)
    if logits_at is not None:
        x = jnp.take_along_axis(x, logits_at[:, :, None], axis=1)
    logits = head(params, x, cfg)
    advance = jnp.full((B,), T, jnp.int32) if advance is None else advance
    return logits, cache.replace(lengths=cache.lengths + advance), hiddens


def forward_prompt(params: Params, prompts: jax.Array, prompt_lens: jax.Array, cache: KVCache, cfg: ModelConfig):
    """Prefill: right-padded prompts i32[B, P] into an *empty* cache (lengths 0). Returns (logits
    f32[B, 1, V] at each row's last prompt token, cache with lengths = prompt_lens).

    Attention reads only the P slots being written, not all S: over a whole cache a prefill's
    attention grows with the cache size (1.4x the time for P = 192 into 1024 slots on the 0.5B)."""
    return forward(
        params, prompts, cache, cfg, advance=prompt_lens, logits_at=(prompt_lens - 1)[:, None], window=prompts.shape[1]
    )[:2]
