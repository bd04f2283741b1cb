"""HF parity: tiny random Llama / Qwen2 / Mistral (GQA, qkv bias, tied/untied, llama3 rope scaling),
saved by transformers, converted by jaxspec: fp32 logits within 1e-4 of HF torch."""

import jax
import numpy as np
import pytest
import torch

from conversion.hf_loader import load_hf_dir
from jaxspec import forward, init_cache
from tests.helpers import hf_tiny, to_jax

CASES = {
    "llama-gqa-untied": ("llama", {}),
    "llama-mha-tied": ("llama", dict(num_key_value_heads=8, tie_word_embeddings=True)),
    "llama3-rope-scaling": (
        "llama",
        dict(
            rope_scaling=dict(
                rope_type="llama3",
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=64,
            ),
            rope_theta=500000.0,
        ),
    ),
    "qwen2-bias-tied": ("qwen2", dict(tie_word_embeddings=True)),
    "qwen2-bias-untied-mqa": ("qwen2", dict(num_key_value_heads=1)),
    "mistral": ("mistral", dict(sliding_window=None, head_dim=4)),
}


def _forward_logits(path, ids):
    cfg, params = load_hf_dir(path)
    logits, _, _ = jax.jit(lambda p, t, c: forward(p, t, c, cfg))(
        to_jax(params), ids, init_cache(cfg, ids.shape[0], 64)
    )
    return cfg, np.asarray(logits)


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_match_hf(name, tmp_path):
    kind, over = CASES[name]
    model = hf_tiny(kind, **over)
    model.save_pretrained(tmp_path)
    ids = np.random.default_rng(0).integers(0, 97, size=(2, 40)).astype(np.int32)
    with torch.no_grad():
        ref = model(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    cfg, ours = _forward_logits(tmp_path, ids)
    assert cfg.tie_embeddings == bool(over.get("tie_word_embeddings", False))
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fmt", ["sharded-safetensors", "torch-bin"])
def test_checkpoint_formats(fmt, tmp_path):
    model = hf_tiny("qwen2")
    if fmt == "torch-bin":
        model.save_pretrained(tmp_path)  # transformers 5 writes safetensors only: swap in a torch state dict
        for f in tmp_path.glob("*.safetensors"):
            f.unlink()
        torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    else:
        model.save_pretrained(tmp_path, max_shard_size="20KB")
        assert (tmp_path / "model.safetensors.index.json").exists()
    ids = np.arange(12, dtype=np.int32)[None]
    with torch.no_grad():
        ref = model(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    _, ours = _forward_logits(tmp_path, ids)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
