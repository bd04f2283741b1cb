"""Tiny model configs shared by the tests (random weights, built with transformers, no downloads)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.config import ModelConfig

VOCAB = 97


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(arch="qwen2", vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_layers=3, num_heads=8,
                num_kv_heads=2, head_dim=8, rope_theta=10000.0, rms_norm_eps=1e-6, qkv_bias=True,
                tie_embeddings=False, max_position_embeddings=512)
    base.update(kw)
    return ModelConfig(**base)


def hf_tiny(kind: str, **overrides):
    """A random tiny HF torch model: kind in llama / qwen2 / mistral, with overrides of the HF config."""
    import torch
    import transformers
    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                  num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6)
    common.update(overrides)
    if kind == "llama":
        conf = transformers.LlamaConfig(**common)
        model = transformers.LlamaForCausalLM(conf)
    elif kind == "qwen2":
        conf = transformers.Qwen2Config(**common)
        model = transformers.Qwen2ForCausalLM(conf)
    elif kind == "mistral":
        conf = transformers.MistralConfig(**common)
        model = transformers.MistralForCausalLM(conf)
    else:
        raise ValueError(kind)
    torch.manual_seed(0)
    with torch.no_grad():  # larger-than-default weights so that the layers actually matter
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.08)
            else:
                p.normal_(1.0 if p.dim() == 1 and p.shape[0] == common["hidden_size"] else 0.0, 0.1)
    return model.float().eval()


def random_prompts(rng: np.random.Generator, lengths, vocab: int = VOCAB) -> list[list[int]]:
    return [rng.integers(0, vocab, size=int(n)).tolist() for n in lengths]


def to_jax(params):
    return jax.tree.map(jnp.asarray, params)
