"""GGUF file → (ModelConfig, params) with `gguf.GGUFReader` + `gguf.quants.dequantize` (no torch).

The config comes from the GGUF metadata; tensors are renamed to HF's names and go through the same
strict map as HF checkpoints (`conversion.mapping`). llama-arch q/k weights are stored permuted for
interleaved RoPE by llama.cpp's converter; they are un-permuted back to HF's rotate-half layout.
qwen2 tensors are stored as HF has them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from conversion.mapping import ConversionError, params_from_hf_tensors
from jaxspec.config import ModelConfig

SUPPORTED_ARCHS = ("llama", "qwen2")

_TOP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_BLK_RE = re.compile(r"blk\.(\d+)\.(.+)")


def hf_name(gguf_name: str) -> str | None:
    if gguf_name in _TOP:
        return _TOP[gguf_name]
    m = _BLK_RE.fullmatch(gguf_name)
    if m and m.group(2) in _BLOCK:
        return f"model.layers.{m.group(1)}.{_BLOCK[m.group(2)]}"
    return None


def open_reader(path):
    import gguf

    try:
        return gguf.GGUFReader(str(path))
    except Exception as e:  # the reader raises ValueError / struct errors / memmap errors on bad files
        raise ConversionError(f"{path} is not a readable GGUF file (corrupt or truncated?): {e}") from e


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def config_from_gguf(reader) -> ModelConfig:
    arch = _field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise ConversionError(f"unsupported GGUF architecture {arch!r} (supported: {', '.join(SUPPORTED_ARCHS)})")
    names = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in names:
        raise ConversionError("GGUF has no token_embd.weight tensor")
    heads = int(_field(reader, f"{arch}.attention.head_count"))
    hidden = int(_field(reader, f"{arch}.embedding_length"))
    vocab = _field(reader, f"{arch}.vocab_size")
    if vocab is None:
        vocab = int(names["token_embd.weight"].shape[-1])
    if _field(reader, f"{arch}.rope.scaling.type") not in (None, "none"):
        raise ConversionError("GGUF rope scaling is not supported")
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    return ModelConfig(
        arch=arch,
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(_field(reader, f"{arch}.feed_forward_length")),
        num_layers=int(_field(reader, f"{arch}.block_count")),
        num_heads=heads,
        num_kv_heads=int(_field(reader, f"{arch}.attention.head_count_kv", heads)),
        head_dim=int(_field(reader, f"{arch}.attention.key_length", hidden // heads)),
        rope_theta=float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        rms_norm_eps=float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        qkv_bias="blk.0.attn_q.bias" in names,
        tie_embeddings="output.weight" not in names,
        max_position_embeddings=int(_field(reader, f"{arch}.context_length", 4096)),
        bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_ids=() if eos is None else (int(eos),),
    )


def unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k permutation (interleaved RoPE pairs → HF rotate-half halves). w: [N*K, D]."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def dequantized(t, cfg: ModelConfig) -> np.ndarray:
    """One GGUF tensor as float32 in HF's layout: dequantized, shape-checked, finite, llama q/k un-permuted."""
    import gguf

    try:
        w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
    except Exception as e:
        raise ConversionError(f"cannot dequantize {t.name} ({t.tensor_type.name}): {e}") from e
    want = tuple(int(d) for d in reversed(t.shape))  # GGUF lists dims fastest-first
    if w.shape != want:
        raise ConversionError(f"{t.name}: dequantized shape {w.shape} != declared {want} (corrupt file?)")
    if not np.isfinite(w).all():
        raise ConversionError(f"{t.name}: non-finite values (corrupt weights)")
    if cfg.arch == "llama" and t.name.endswith("attn_q.weight"):
        w = unpermute(w, cfg.num_heads)
    elif cfg.arch == "llama" and t.name.endswith("attn_k.weight"):
        w = unpermute(w, cfg.num_kv_heads)
    return w


def named_tensors(reader) -> dict:
    """The reader's tensors under HF names; a tensor with no mapping is an error naming every such one."""
    out, unknown = {}, []
    for t in reader.tensors:
        name = hf_name(t.name)
        if name is None:
            unknown.append(t.name)
        else:
            out[name] = t
    if unknown:
        raise ConversionError(f"unexpected GGUF tensors (no mapping): {unknown}")
    return out


def read_tensors(reader, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Every tensor, dequantized, under HF names (the whole model on the host: `load_gguf`)."""
    return {name: dequantized(t, cfg) for name, t in named_tensors(reader).items()}


def load_gguf(path, dtype=np.float32):
    """Returns (cfg, params as numpy arrays)."""
    reader = open_reader(Path(path))
    cfg = config_from_gguf(reader)
    return cfg, params_from_hf_tensors(cfg, read_tensors(reader, cfg), dtype)
