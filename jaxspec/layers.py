"""Pure building blocks of a Llama/Qwen2 layer. Shapes: B batch, T new tokens, S cache slots,
D hidden, H query heads, G = H / Hkv query heads per kv head, K head_dim, F mlp width.

Dtypes: activations are in the params' dtype (`ModelConfig.dtype`; "f32" in the shape comments below
reads "that dtype"), the cache in `cache_dtype`; norm statistics, RoPE angles, attention scores and
softmax are f32 whatever the dtype. Every product runs at `ModelConfig.precision`.

The attention and MLP blocks return their *residual delta*, not `x + delta`: EasySpec runs several
layers' attention blocks from one input and sums the deltas."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxspec.config import ModelConfig


def _skinny_rows(n: int) -> int | None:
    """Rows to pad a skinny product to on XLA:CPU, or None to use the plain einsum.

    Seen in a one-off probe (one 8960x1536 fp32 weight, 2 cores, repeated, so partly cache-resident): the
    plain einsum ran about half as fast for 2..16 rows as for one (XLA:CPU's x · wᵀ kernel); w · xᵀ into
    an [out, rows] result kept the one-row rate up to 4 rows and most of it at 8 and 16, with counts in
    between slower than the next power of two — so 5..16 rows are padded up to 8 or 16. The effect on
    the model: `step_costs` in experiments/results/speculative/spec_*.json.

    One row keeps the plain einsum, although its sums run in another order than a block's (in bf16 that
    can flip a rounding; README "Numerics"): padding it to 2 rows made the two bit-identical only for
    blocks of up to 4 rows and cost fp32 one-token steps ~20 % (SmolLM2 25.5-26.0 → 20.5-21.6 tok/s,
    Qwen-0.5B 10.7-10.8 → 8.6; an A/B with experiments' bench, not kept)."""
    if n == 1 or n > 32:
        return None
    return n if n <= 4 else (1 << (n - 1).bit_length() if n <= 16 else n)


def linear(x: jax.Array, w: jax.Array, precision: lax.Precision, out_dtype=None) -> jax.Array:
    """x: [..., In] · w: [Out, In] → [..., Out] (every weight is stored [out, in]), at `precision`
    (ModelConfig.lax_precision), in x's dtype unless `out_dtype` (the LM head asks for f32 logits).

    Verification passes feed a handful of tokens, where XLA:CPU's choice of kernel halves the weight
    bandwidth; there the product is computed as w · xᵀ behind optimisation barriers (so the simplifier
    cannot fold the transposes back into the slow form). Other backends and sizes use the einsum."""
    lead, d = x.shape[:-1], x.shape[-1]
    n = math.prod(lead)
    rows = _skinny_rows(n) if jax.default_backend() == "cpu" else None
    if rows is None:
        return jnp.einsum("...d,ed->...e", x, w, precision=precision, preferred_element_type=out_dtype)
    x2 = x.reshape(n, d)
    if rows > n:
        x2 = jnp.pad(x2, ((0, rows - n), (0, 0)))
    xt = lax.optimization_barrier(x2.T)  # [In, rows]
    y = lax.optimization_barrier(jnp.dot(w, xt, precision=precision, preferred_element_type=out_dtype))  # [Out, rows]
    return y.T[:n].reshape(*lead, w.shape[0])


def rms_norm(x: jax.Array, w: jax.Array, eps: float) -> jax.Array:
    # x: f32[..., D]; statistics in fp32 whatever the activation dtype
    xf = x.astype(jnp.float32)
    y = xf * lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return (y * w.astype(jnp.float32)).astype(x.dtype)


def rope_frequencies(cfg: ModelConfig) -> jax.Array:
    """Inverse frequencies f32[K/2], with llama3-style scaling when configured."""
    K = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (jnp.arange(0, K, 2, dtype=jnp.float32) / K))
    s = cfg.rope_scaling
    if s is None:
        return inv
    # HF `_compute_llama3_parameters`: long wavelengths divided by `factor`, short kept, smooth between
    low_wl = s.original_max_position_embeddings / s.low_freq_factor
    high_wl = s.original_max_position_embeddings / s.high_freq_factor
    wl = 2 * jnp.pi / inv
    scaled = jnp.where(wl > low_wl, inv / s.factor, inv)
    smooth = (s.original_max_position_embeddings / wl - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    mid = (1 - smooth) * scaled / s.factor + smooth * scaled
    is_mid = (wl >= high_wl) & (wl <= low_wl)
    return jnp.where(is_mid, mid, scaled)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
    # x: f32[B, T, N, K]; positions: i32[B, T]. HF "rotate_half" convention (halves, not interleaved).
    ang = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, K/2]
    cos = jnp.cos(ang)[:, :, None, :]
    sin = jnp.sin(ang)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def write_kv(cache: jax.Array, new: jax.Array, start: jax.Array) -> jax.Array:
    """Write `new` f32[B, T, Hkv, K] into `cache` f32[B, Hkv, S, K] at per-row slot `start` i32[B]."""

    def row(c, n, s):
        return lax.dynamic_update_slice(c, jnp.swapaxes(n, 0, 1).astype(c.dtype), (0, s, 0))

    return jax.vmap(row)(cache, new, start)


def project_qkv(p: dict, x: jax.Array, positions: jax.Array, cfg: ModelConfig):
    """Pre-norm q/k/v projections with RoPE. x: f32[B, T, D] → q f32[B, T, H, K], k/v f32[B, T, Hkv, K]."""
    B, T, _ = x.shape
    Hkv, G, K = cfg.num_kv_heads, cfg.q_per_kv, cfg.head_dim
    h = rms_norm(x, p["attn_norm"], cfg.rms_norm_eps)
    # 2-D [out, in] matvecs, heads split afterwards (3-D weights were slower: experiments/vanilla/bench_layouts.py)
    pr = cfg.lax_precision
    q = linear(h, p["wq"], pr)  # [B, T, H*K]
    k = linear(h, p["wk"], pr)  # [B, T, Hkv*K]
    v = linear(h, p["wv"], pr)
    if cfg.qkv_bias:
        q, k, v = q + p["bq"], k + p["bk"], v + p["bv"]
    inv_freq = rope_frequencies(cfg)
    q = apply_rope(q.reshape(B, T, Hkv * G, K), positions, inv_freq)
    k = apply_rope(k.reshape(B, T, Hkv, K), positions, inv_freq)
    return q, k, v.reshape(B, T, Hkv, K)


def attend(p: dict, q: jax.Array, k_cache: jax.Array, v_cache: jax.Array, mask: jax.Array, cfg: ModelConfig):
    """Attention of q f32[B, T, H, K] over the first W = mask.shape[-1] cache slots (new entries already
    written), then the output projection: → delta f32[B, T, D]."""
    return linear(attention_mix(q, k_cache, v_cache, mask, cfg), p["wo"], cfg.lax_precision)


def use_fused_attention(cfg: ModelConfig, backend: str | None = None) -> bool:
    """`cfg.attention` resolved on `backend` (default: JAX's): "auto" takes jax.nn.dot_product_attention
    off CPU in the fast precision mode only — its products take the backend's default precision, so the
    parity mode ("highest") keeps ours, whose every product carries the configured precision; on XLA:CPU
    ours is the layout measured fastest (experiments/vanilla/bench_attention.py)."""
    if cfg.attention != "auto":
        return cfg.attention == "fused"
    return (backend or jax.default_backend()) != "cpu" and cfg.precision == "default"


def fused_attention_mix(
    q: jax.Array,
    k_cache: jax.Array,
    v_cache: jax.Array,
    mask: jax.Array,
    cfg: ModelConfig,
    implementation: str | None = None,
):
    """`attention_mix` by jax.nn.dot_product_attention (GQA native; `implementation` None: cuDNN where it
    applies on GPU, else XLA's; "xla" pins XLA's). It takes keys and values [B, S, Hkv, K], so the cache
    window [B, Hkv, W, K] is transposed first — a copy of the window per layer and call, which a one-token
    step on a memory-bound device pays in bandwidth: the A/B is `--attention` (experiments/gpu_check.sh)."""
    B, T = q.shape[:2]
    W = mask.shape[-1]
    kw, vw = (k_cache, v_cache) if W == k_cache.shape[2] else (k_cache[:, :, :W], v_cache[:, :, :W])
    k = jnp.swapaxes(kw, 1, 2).astype(q.dtype)  # [B, W, Hkv, K]
    v = jnp.swapaxes(vw, 1, 2).astype(q.dtype)
    o = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], implementation=implementation)  # [B, T, H, K]
    return o.reshape(B, T, cfg.num_heads * cfg.head_dim)


def attention_mix(q: jax.Array, k_cache: jax.Array, v_cache: jax.Array, mask: jax.Array, cfg: ModelConfig):
    """`attend` before its output projection: the heads' mixed values [B, T, H*K] in q's dtype (scores
    and softmax in f32; the cache may hold another dtype, `ModelConfig.cache_dtype`). Off CPU in the fast
    precision mode, jax.nn.dot_product_attention's (`use_fused_attention`)."""
    if use_fused_attention(cfg):
        return fused_attention_mix(q, k_cache, v_cache, mask, cfg)
    B, T = q.shape[:2]
    Hkv, G, K = cfg.num_kv_heads, cfg.q_per_kv, cfg.head_dim
    W = mask.shape[-1]
    kw, vw = (k_cache, v_cache) if W == k_cache.shape[2] else (k_cache[:, :, :W], v_cache[:, :, :W])
    # Heads-major: each kv head's G·T queries form one [G·T, K] matrix against its [W, K] keys, and the
    # softmax runs over the last, contiguous axis (on XLA:CPU 3x faster for a prefill and 2x for a decode
    # step than contracting the [B, T, Hkv, G, K] layout directly: experiments/vanilla/bench_attention.py).
    qh = jnp.transpose(q.reshape(B, T, Hkv, G, K), (0, 2, 3, 1, 4)).reshape(B, Hkv, G * T, K)
    pr = cfg.lax_precision
    s = jnp.einsum("bnmk,bnsk->bnms", qh, kw, precision=pr, preferred_element_type=jnp.float32) * (K**-0.5)
    s = jnp.where(mask[:, None, None], s.reshape(B, Hkv, G, T, W), -jnp.inf)  # [B, Hkv, G, T, W]
    w = jax.nn.softmax(s, axis=-1).astype(v_cache.dtype).reshape(B, Hkv, G * T, W)
    o = jnp.einsum("bnms,bnsk->bnmk", w, vw, precision=pr).astype(q.dtype)  # [B, Hkv, G*T, K]
    return jnp.transpose(o.reshape(B, Hkv, G, T, K), (0, 3, 1, 2, 4)).reshape(B, T, Hkv * G * K)


def attention_block(
    p: dict,
    x: jax.Array,
    k_cache: jax.Array,
    v_cache: jax.Array,
    positions: jax.Array,
    write_at: jax.Array,
    mask: jax.Array,
    cfg: ModelConfig,
):
    """One layer's pre-norm attention.

    x: f32[B, T, D]; k_cache/v_cache: f32[B, Hkv, S, K]; positions: i32[B, T] (RoPE positions);
    write_at: i32[B] (first cache slot of the T new entries); mask: bool[B, T, W] (which of the first W
    slots each query sees, *including* the new ones; W < S when every visible slot lies below W, e.g. a
    prefill reads only its own T slots). Returns (delta f32[B, T, D], k_cache, v_cache)."""
    q, k, v = project_qkv(p, x, positions, cfg)
    k_cache = write_kv(k_cache, k, write_at)
    v_cache = write_kv(v_cache, v, write_at)
    return attend(p, q, k_cache, v_cache, mask, cfg), k_cache, v_cache


def mlp_block(p: dict, x: jax.Array, cfg: ModelConfig) -> jax.Array:
    """One layer's pre-norm SwiGLU MLP. x: f32[B, T, D] → delta f32[B, T, D]."""
    h = rms_norm(x, p["mlp_norm"], cfg.rms_norm_eps)
    pr = cfg.lax_precision
    g = linear(h, p["w_gate"], pr)  # [B, T, F]
    u = linear(h, p["w_up"], pr)
    return linear(jax.nn.silu(g) * u, p["w_down"], pr)
