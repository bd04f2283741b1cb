"""The parameter pytree, declared once: every leaf's shape and logical axes live in `param_info`.

Layout (chosen by measurement, see architecture.md "Seams"): per-layer weights are kept as a *list of
per-layer dicts*, not stacked on a leading layer axis. On XLA:CPU a `lax.scan` over stacked weights
copied each layer's slice every step (2.3x slower decode); an unrolled Python loop over a list reads
every weight once, in place. Any layer range, a single attention or MLP block, or a run-time exit
layer (a `lax.cond` per layer) are all plain indexing into this list.

Every matrix is stored `[out, in]` (HF/torch Linear order, the contraction over the last, contiguous
axis) and 2-D: on XLA:CPU at batch 1 a Qwen-1.5B-shaped decode step's matvecs ran at 29.0 GB/s so,
against 23.9 GB/s for `[in, out]` and 16.5 GB/s with 3-D `[H, K, D]` q/k/v weights
(experiments/vanilla/bench_layouts.py → experiments/results/vanilla/layouts_cpu.json). Head axes are flattened
head-major (`H*K`), so sharding that axis over `tp` devices still gives each whole heads.

    params = {
      "embed":      f32[V, D]           (vocab, embed)
      "layers": [ {                      one dict per layer
          "attn_norm": f32[D]            (embed,)
          "wq": f32[H*K, D]              (heads, embed)       K = head_dim, head-major
          "wk": f32[Hkv*K, D]            (kv_heads, embed)
          "wv": f32[Hkv*K, D]
          "bq": f32[H*K], "bk"/"bv": f32[Hkv*K]        only when cfg.qkv_bias
          "wo": f32[D, H*K]              (embed, heads)
          "mlp_norm": f32[D]
          "w_gate": f32[F, D], "w_up": f32[F, D]       (mlp, embed)
          "w_down": f32[D, F]            (embed, mlp)
      }, ... ],
      "final_norm": f32[D],
      "lm_head":    f32[V, D]            (vocab, embed)    absent when cfg.tie_embeddings
    }
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.config import ModelConfig

Params = dict[str, Any]
# Bumped whenever the tree or a leaf's layout changes: converted checkpoints are keyed by it.
LAYOUT_VERSION = 3


@dataclasses.dataclass(frozen=True)
class ArrayInfo:
    """Shape and logical axis names of one parameter (a pytree *leaf*: not registered)."""

    shape: tuple[int, ...]
    axes: tuple[str | None, ...]
    init: str = "normal"  # "normal" | "ones" | "zeros"


def layer_info(cfg: ModelConfig) -> dict[str, ArrayInfo]:
    D, F, H, Hkv, K = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    info = {
        "attn_norm": ArrayInfo((D,), ("embed",), "ones"),
        "wq": ArrayInfo((H * K, D), ("heads", "embed")),
        "wk": ArrayInfo((Hkv * K, D), ("kv_heads", "embed")),
        "wv": ArrayInfo((Hkv * K, D), ("kv_heads", "embed")),
        "wo": ArrayInfo((D, H * K), ("embed", "heads")),
        "mlp_norm": ArrayInfo((D,), ("embed",), "ones"),
        "w_gate": ArrayInfo((F, D), ("mlp", "embed")),
        "w_up": ArrayInfo((F, D), ("mlp", "embed")),
        "w_down": ArrayInfo((D, F), ("embed", "mlp")),
    }
    if cfg.qkv_bias:
        info["bq"] = ArrayInfo((H * K,), ("heads",))
        info["bk"] = ArrayInfo((Hkv * K,), ("kv_heads",))
        info["bv"] = ArrayInfo((Hkv * K,), ("kv_heads",))
    return info


def param_info(cfg: ModelConfig) -> Params:
    """The whole parameter tree as `ArrayInfo` leaves: the single declaration of every weight."""
    tree: Params = {
        "embed": ArrayInfo((cfg.vocab_size, cfg.hidden_size), ("vocab", "embed")),
        "layers": [layer_info(cfg) for _ in range(cfg.num_layers)],
        "final_norm": ArrayInfo((cfg.hidden_size,), ("embed",), "ones"),
    }
    if not cfg.tie_embeddings:
        tree["lm_head"] = ArrayInfo((cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"))
    return tree


def is_info(x: Any) -> bool:
    return isinstance(x, ArrayInfo)


def abstract_params(cfg: ModelConfig, shardings: Params | None = None) -> Params:
    """`jax.ShapeDtypeStruct` tree in `cfg.dtype` (optionally carrying shardings), e.g. for an orbax restore."""
    info, dtype = param_info(cfg), jnp.dtype(cfg.dtype)
    if shardings is None:
        return jax.tree.map(lambda i: jax.ShapeDtypeStruct(i.shape, dtype), info, is_leaf=is_info)
    return jax.tree.map(lambda i, s: jax.ShapeDtypeStruct(i.shape, dtype, sharding=s), info, shardings, is_leaf=is_info)


def init_params(key: jax.Array, cfg: ModelConfig, scale: float = 0.02) -> Params:
    """Random parameters in `cfg.dtype` for tests (norm weights around 1 so that layers stay well conditioned)."""
    info, dtype = param_info(cfg), jnp.dtype(cfg.dtype)
    leaves, treedef = jax.tree.flatten(info, is_leaf=is_info)
    keys = jax.random.split(key, len(leaves))

    def one(k, i: ArrayInfo):
        if i.init == "ones":
            return (1.0 + 0.1 * jax.random.normal(k, i.shape)).astype(dtype)
        return (scale * jax.random.normal(k, i.shape)).astype(dtype)

    return jax.tree.unflatten(treedef, [one(k, i) for k, i in zip(keys, leaves)])


def check_params(params: Params, cfg: ModelConfig) -> None:
    """Raise a ValueError naming every missing, unexpected or mis-shaped leaf."""
    want = {
        jax.tree_util.keystr(p): i.shape
        for p, i in jax.tree_util.tree_flatten_with_path(param_info(cfg), is_leaf=is_info)[0]
    }
    got = {jax.tree_util.keystr(p): tuple(np.shape(x)) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    bad = sorted(f"{k}: {got[k]} != {want[k]}" for k in set(want) & set(got) if got[k] != want[k])
    if missing or extra or bad:
        raise ValueError(f"params do not match the config: missing={missing} unexpected={extra} mis-shaped={bad}")


def head_in_layers(cfg: ModelConfig) -> float:
    """The LM head's weights over one decoder layer's: what a draft's head costs in layers when a step
    is bound by its weight reads (decoding at batch 1 on GPU/TPU). Tied or not, the head streams a
    [V, D] matrix: 5.0 layers for Qwen2.5-1.5B, 9.1 for the 0.5B, 8.0 for SmolLM2-135M."""
    layer = sum(int(np.prod(i.shape)) for i in layer_info(cfg).values())
    return cfg.vocab_size * cfg.hidden_size / layer


def param_bytes(params: Params, include_embed: bool = False) -> int:
    """Bytes a decode step reads from weights (the input embedding is gathered, not streamed)."""
    total = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    if not include_embed and "lm_head" in params:
        total -= params["embed"].size * params["embed"].dtype.itemsize
    return total
