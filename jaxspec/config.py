"""`ModelConfig`: the static description of a Llama / Qwen2 / Mistral-style decoder.

Frozen and hashable, so it is a static argument of every jitted function."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
from jax import lax

DTYPES = ("float32", "bfloat16", "float16")
PRECISIONS = {"highest": lax.Precision.HIGHEST, "default": lax.Precision.DEFAULT}
ATTENTIONS = ("auto", "einsum", "fused")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama-3-style frequency scaling (`rope_type: llama3` in HF configs)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    arch: str  # "llama" | "qwen2" | "mistral": informational; behaviour is in the flags below
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    rms_norm_eps: float = 1e-6
    qkv_bias: bool = False
    tie_embeddings: bool = False
    max_position_embeddings: int = 4096
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    # numerics (not in a HF config: load_model sets them). `dtype` is the params' and the activations';
    # f32 stays only where it belongs: norm statistics, softmax, RoPE, logits, acceptance.
    dtype: str = "float32"
    cache_dtype: str | None = None  # the KV cache's; None: `dtype`
    # every weight and attention product: "highest" (parity: exact f32 products, what "identical to HF"
    # rests on) or "default" (the backend's fast mode: TF32 on recent NVIDIA GPUs, bf16 passes on TPU;
    # the same as "highest" on XLA:CPU)
    precision: str = "highest"
    # attention's two products: "einsum" (ours, layers.attention_mix: heads-major, explicit precision),
    # "fused" (jax.nn.dot_product_attention: cuDNN's flash attention on GPU where it applies, else XLA's),
    # "auto": fused off CPU in the fast precision mode, ours otherwise (layers.use_fused_attention)
    attention: str = "auto"

    def __post_init__(self):
        for f, allowed in (
            ("dtype", DTYPES),
            ("cache_dtype", DTYPES + (None,)),
            ("precision", tuple(PRECISIONS)),
            ("attention", ATTENTIONS),
        ):
            if getattr(self, f) not in allowed:
                raise ValueError(f"ModelConfig.{f}={getattr(self, f)!r}: one of {', '.join(map(str, allowed))}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        for f in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "head_dim"):
            if getattr(self, f) <= 0:
                raise ValueError(f"ModelConfig.{f} must be positive, got {getattr(self, f)}")

    @property
    def q_per_kv(self) -> int:
        return self.num_heads // self.num_kv_heads

    @property
    def kv_dtype(self):
        return jnp.dtype(self.cache_dtype or self.dtype)

    @property
    def lax_precision(self) -> lax.Precision:
        return PRECISIONS[self.precision]

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)


def _eos_tuple(eos: Any) -> tuple[int, ...]:
    if eos is None:
        return ()
    return tuple(int(e) for e in eos) if isinstance(eos, (list, tuple)) else (int(eos),)


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    """Map a HF `config.json` dict (LlamaConfig / Qwen2Config / MistralConfig) to a ModelConfig."""
    model_type = hf.get("model_type", "llama")
    if model_type not in ("llama", "qwen2", "mistral"):
        raise ValueError(f"unsupported model_type {model_type!r}: jaxspec supports llama, qwen2 and mistral")
    heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    scaling = None
    rs = hf.get("rope_scaling") or None
    theta = hf.get("rope_theta")
    rp = hf.get("rope_parameters") or None  # transformers >= 5 keeps theta and scaling here
    if rp:
        theta = rp.get("rope_theta", theta)
        if rp.get("rope_type", "default") != "default":
            rs = rp
    if rs:
        kind = rs.get("rope_type", rs.get("type"))
        if kind == "llama3":
            scaling = RopeScaling(
                float(rs["factor"]),
                float(rs["low_freq_factor"]),
                float(rs["high_freq_factor"]),
                int(rs["original_max_position_embeddings"]),
            )
        elif kind not in (None, "default"):
            raise ValueError(f"unsupported rope scaling {kind!r} (supported: llama3)")
    if hf.get("sliding_window") and hf.get("use_sliding_window", model_type == "mistral"):
        # a window wider than any sequence we run is a no-op; narrower would change the model
        if hf["sliding_window"] < hf.get("max_position_embeddings", 0):
            raise ValueError(f"sliding-window attention ({hf['sliding_window']}) is not supported")
    return ModelConfig(
        arch=model_type,
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=head_dim,
        rope_theta=float(theta if theta is not None else 10000.0),
        rope_scaling=scaling,
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        qkv_bias=bool(hf.get("attention_bias", model_type == "qwen2")),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_ids=_eos_tuple(hf.get("eos_token_id")),
    )
