"""A small SmolLM2-shaped model for the command-line tests.

SmolLM2's own tokenizer (real prompts, chat template and text) over 8 random layers of width 72 (9 query
heads, 3 kv heads, a tied head, SmolLM2's vocabulary and RoPE base), saved as a HF directory — the CLI
loads it like any other. The runners unroll their layers, so compiling them grows with the layer count:
the 30-layer SmolLM2 made the CLI tests half of the suite's time. Flags, JSON fields and errors are the
same for any model; equality on real weights stays in test_real_models and the real-model CLI tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

LAYERS = 8
HEADS, KV_HEADS, HEAD_DIM = 9, 3, 8
MODEL = "smollm2-135m-instruct"  # the real model the `real` CLI tests run (and whose tokenizer this one has)


def tiny_smollm_dir() -> Path:
    """Built once (fixed seed) under the asset cache, so its converted checkpoint is reused across runs;
    written to a temporary name and renamed, so concurrent workers never see half a directory."""
    from conversion import assets

    root = assets.cache_dir() / "test-models" / f"smollm2-tiny-{LAYERS}l-v1"
    if (root / "config.json").exists():
        return root
    import torch
    import transformers

    from conversion.loader import load_model_tokenizer

    conf = transformers.LlamaConfig(
        vocab_size=49152,
        hidden_size=HEADS * HEAD_DIM,
        intermediate_size=128,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(conf)
    with torch.no_grad():  # larger-than-default weights so that every layer changes the output
        for name, p in model.named_parameters():
            p.normal_(1.0, 0.1) if "norm" in name else p.normal_(0.0, 0.08)
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.float().save_pretrained(str(tmp), safe_serialization=True)
    load_model_tokenizer("smollm2-135m-instruct").save_pretrained(str(tmp))
    try:
        tmp.rename(root)
    except OSError:  # another worker finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def greedy_text(model: str):
    """text(n): `model`'s greedy continuation of "def add(a, b):" to n <= 13 tokens (no EOS before), from
    the library's vanilla runner (HF-identical: test_real_models, and test_cli's bench test)."""
    import jax

    from conversion.tokenizer import eos_ids
    from jaxspec import load_model
    from jaxspec.prompts import Prompt, encode
    from jaxspec.speculative import make_runner

    m = load_model(model)
    ids = encode(m.tokenizer, Prompt("0", "def add(a, b):"))
    res = make_runner(m, None, None, max_new_tokens=13, max_len=64, eos_ids=eos_ids(m.tokenizer, m.cfg)).run(
        [ids], jax.random.key(0)
    )
    toks = res.output_ids[0]
    assert len(toks) == 13
    return lambda n: m.tokenizer.decode(toks[:n], skip_special_tokens=True)


def smollm_frequencies(path):
    """A frequency file for SmolLM2's tokenizer: its greedy continuation of a prompt, counted."""
    from conversion.loader import load_model_tokenizer
    from jaxspec.speculative.hot_vocab import count_tokens, write_frequencies

    tok = load_model_tokenizer(MODEL)
    ids = tok.encode("def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n")
    return write_frequencies(path, count_tokens([ids]), tok, 49152, {"test": True})
