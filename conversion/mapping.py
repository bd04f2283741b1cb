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


# HF name → (param key, transform). jaxspec stores every matrix as HF does, [out, in], with head axes
# flattened head-major: the map is an identity per tensor (the strictness is in the names and shapes),
# which is what lets the streaming converter (conversion/streaming.py) read any slice straight from a file.
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


def match_names(cfg: ModelConfig, shapes: dict[str, tuple[int, ...]]) -> tuple[dict[tuple, str], list[str]]:
    """Which HF tensor fills which param of `cfg`, from names and shapes alone (no data read): returns
    (param path → HF name, for every leaf of the param tree; the stored heads a tied config must find
    equal to the embedding). Strict: a ConversionError lists every missing param, unexpected tensor and
    mis-shaped tensor at once. Paths are ("layers", i, key) or (key,)."""
    from jaxspec.params import param_info

    info = param_info(cfg)
    found: dict[tuple, str] = {}
    unexpected, misshaped, tied = [], [], []
    for name, shape in shapes.items():
        m = _LAYER_RE.fullmatch(name)
        if m and m.group(2) in LAYER_RULES and int(m.group(1)) < cfg.num_layers:
            key, _ = LAYER_RULES[m.group(2)]
            path, want = ("layers", int(m.group(1)), key), info["layers"][int(m.group(1))].get(key)
        elif name in TOP_RULES:
            key, _ = TOP_RULES[name]
            path, want = (key,), info.get(key)
            if key == "lm_head" and cfg.tie_embeddings:  # some tied checkpoints still store the head
                emb = shapes.get("model.embed_tokens.weight")
                if emb is None or tuple(emb) != tuple(shape):
                    unexpected.append(f"{name} (config ties embeddings but the stored head differs)")
                else:
                    tied.append(name)
                continue
        else:
            unexpected.append(name)
            continue
        if want is None:  # e.g. a bias for a model without qkv bias
            unexpected.append(name)
        elif tuple(shape) != want.shape:
            misshaped.append(f"{name}: {tuple(shape)}, expected {want.shape}")
        else:
            found[path] = name
    want_paths = [("layers", i, k) for i, layer in enumerate(info["layers"]) for k in layer]
    want_paths += [(k,) for k in info if k != "layers"]
    missing = sorted(_keystr(p) for p in want_paths if p not in found)
    if missing or unexpected or misshaped:
        raise ConversionError(
            "weights do not match the model config:\n"
            f"  missing params: {missing}\n  unexpected tensors: {sorted(unexpected)}\n"
            f"  mis-shaped tensors: {misshaped}"
        )
    return found, tied


def _keystr(path: tuple) -> str:
    return "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in path)


def params_from_hf_tensors(cfg: ModelConfig, tensors: dict[str, np.ndarray], dtype=np.float32) -> Params:
    """Map HF-named arrays onto the param tree of `cfg`, strictly (see module docstring and `match_names`)."""
    found, tied = match_names(cfg, {k: np.shape(v) for k, v in tensors.items()})
    for name in tied:
        if not np.array_equal(tensors[name], tensors["model.embed_tokens.weight"]):
            raise ConversionError(f"{name}: the config ties embeddings but the stored head differs from the embedding")
    params: Params = {"layers": [{} for _ in range(cfg.num_layers)]}
    for path, name in found.items():
        value = np.ascontiguousarray(tensors[name], dtype=dtype)
        if path[0] == "layers":
            params["layers"][path[1]][path[2]] = value
        else:
            params[path[0]] = value
    return params
