"""The strict map from HF tensor names (numpy arrays, HF layout `[out, in]`) to jaxspec params.

Every source tensor must be used exactly once and every target leaf filled with the declared shape;
otherwise a `ConversionError` lists the missing, unexpected and mis-shaped names. Both converters
(HF safetensors/.bin and GGUF, whose names are first renamed to HF's) end here."""

from __future__ import annotations

import re
from typing import Callable

import numpy as np

from jaxspec.config import ModelConfig
from jaxspec.params import Params


class ConversionError(ValueError):
    """Source tensors do not map one-to-one onto the model's parameters."""


# HF name → (param path, transform). Transforms take the HF array and the config.
# jaxspec stores every matrix as HF does, [out, in], with head axes flattened head-major: the map is
# an identity per tensor (the strictness is in the names and shapes).
_ID = lambda w, c: w  # noqa: E731

LAYER_RULES: dict[str, tuple[str, Callable]] = {
    "input_layernorm.weight": ("attn_norm", _ID),
    "self_attn.q_proj.weight": ("wq", _ID),
    "self_attn.k_proj.weight": ("wk", _ID),
    "self_attn.v_proj.weight": ("wv", _ID),
    "self_attn.q_proj.bias": ("bq", _ID),
    "self_attn.k_proj.bias": ("bk", _ID),
    "self_attn.v_proj.bias": ("bv", _ID),
    "self_attn.o_proj.weight": ("wo", _ID),
    "post_attention_layernorm.weight": ("mlp_norm", _ID),
    "mlp.gate_proj.weight": ("w_gate", _ID),
    "mlp.up_proj.weight": ("w_up", _ID),
    "mlp.down_proj.weight": ("w_down", _ID),
}
TOP_RULES: dict[str, tuple[str, Callable]] = {
    "model.embed_tokens.weight": ("embed", _ID),
    "model.norm.weight": ("final_norm", _ID),
    "lm_head.weight": ("lm_head", _ID),
}
_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)")


def params_from_hf_tensors(cfg: ModelConfig, tensors: dict[str, np.ndarray], dtype=np.float32) -> Params:
    """Map HF-named arrays onto the param tree of `cfg`, strictly (see module docstring)."""
    import jax

    from jaxspec.params import is_info, param_info

    info = param_info(cfg)
    params: Params = {"layers": [{} for _ in range(cfg.num_layers)]}
    unexpected, misshaped = [], []
    for name, arr in tensors.items():
        m = _LAYER_RE.fullmatch(name)
        if m and m.group(2) in LAYER_RULES and int(m.group(1)) < cfg.num_layers:
            key, fn = LAYER_RULES[m.group(2)]
            target, want = params["layers"][int(m.group(1))], info["layers"][int(m.group(1))].get(key)
        elif name in TOP_RULES:
            key, fn = TOP_RULES[name]
            target, want = params, info.get(key)
            if key == "lm_head" and cfg.tie_embeddings:
                # some tied checkpoints still store the head: accept it only as an exact copy
                emb = tensors.get("model.embed_tokens.weight")
                if emb is None or emb.shape != arr.shape or not np.array_equal(emb, arr):
                    unexpected.append(f"{name} (config ties embeddings but the stored head differs)")
                continue
        else:
            unexpected.append(name)
            continue
        if want is None:  # e.g. a bias for a model without qkv bias
            unexpected.append(name)
            continue
        try:
            value = np.ascontiguousarray(fn(np.asarray(arr), cfg), dtype=dtype)
        except ValueError as e:
            misshaped.append(f"{name}: {tuple(arr.shape)} ({e})")
            continue
        if value.shape != want.shape:
            misshaped.append(f"{name}: {tuple(arr.shape)} → {value.shape}, expected {want.shape}")
            continue
        target[key] = value
    want_paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(info, is_leaf=is_info)[0]}
    got_paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
    missing = sorted(want_paths - got_paths)
    if missing or unexpected or misshaped:
        raise ConversionError(
            "weights do not match the model config:\n"
            f"  missing params: {missing}\n  unexpected tensors: {sorted(unexpected)}\n"
            f"  mis-shaped tensors: {misshaped}"
        )
    return params
