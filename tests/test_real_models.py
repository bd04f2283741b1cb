"""Real weights: SmolLM2-135M (llama, tied, permuted q/k) and Qwen2.5-Coder-0.5B (qwen2, qkv bias)
converted from GGUF by jaxspec vs HF torch loading the same GGUF: logits within 1e-3, 32 greedy tokens
identical. Also: tokenizer + chat template, and the orbax checkpoint round trip of the loader."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from conversion import assets
from conversion.loader import load_model
from conversion.tokenizer import encode_prompt, eos_ids
from jaxspec import DecodeSpec, forward, generate, init_cache, output_ids, pad_prompts

pytestmark = pytest.mark.real

STOP = {"smollm2-135m-instruct": (0, 2), "qwen2.5-coder-0.5b-instruct": (151643, 151645)}
PROMPT = "Write a Python function that returns the n-th Fibonacci number, with a docstring."


def _hf(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
def test_gguf_matches_hf_torch(name, tmp_path):
    path = assets.fetch(name)
    m = load_model(name, checkpoint_root=tmp_path)
    assert not m.from_checkpoint
    ids = encode_prompt(m.tokenizer, PROMPT, chat=True)
    assert eos_ids(m.tokenizer, m.cfg) == STOP[name]  # end of turn *and* end of text
    hf = _hf(path)
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
        hf_out = hf.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=32,
            do_sample=False,
            eos_token_id=list(eos_ids(m.tokenizer, m.cfg)),
            pad_token_id=0,
        )[0, len(ids) :].tolist()
    logits, _, _ = jax.jit(lambda p, t, c: forward(p, t, c, m.cfg))(
        m.params, jnp.asarray([ids]), init_cache(m.cfg, 1, 128)
    )
    np.testing.assert_allclose(np.asarray(logits[0]), ref, atol=1e-3, rtol=0)

    arr, lens, slots = pad_prompts([ids], m.cfg, 32)
    spec = DecodeSpec(m.cfg, 32, slots, eos_ids=eos_ids(m.tokenizer, m.cfg))
    ours = output_ids(generate(m.params, jnp.asarray(arr), jnp.asarray(lens), jax.random.key(0), spec=spec))[0]
    assert ours == hf_out
    assert len(ours) == 32  # the comparison covered 32 tokens, not an early EOS

    # second load: restored from the orbax checkpoint, identical weights
    again = load_model(name, checkpoint_root=tmp_path)
    assert again.from_checkpoint
    # its tokenizer comes from the checkpoint's saved copy: same ids, chat template and stop tokens
    assert encode_prompt(again.tokenizer, PROMPT, chat=True) == ids
    assert (
        again.tokenizer(PROMPT + " ünïcødé 数字 123")["input_ids"]
        == m.tokenizer(PROMPT + " ünïcødé 数字 123")["input_ids"]
    )
    assert eos_ids(again.tokenizer, again.cfg) == eos_ids(m.tokenizer, m.cfg)
    for a, b in zip(jax.tree.leaves(m.params), jax.tree.leaves(again.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("method", ["chain", "tree", "easyspec"])
def test_speculation_on_real_weights_equals_vanilla(method):
    """Qwen2.5-Coder-0.5B drafted by its own first 8 layers (a real, imperfect draft sharing the vocab;
    easyspec: those layers as [0] [1-3] [4-6] [7]): greedy speculative output equals vanilla for a ragged
    batch of two chat prompts."""
    import dataclasses

    from jaxspec.easyspec import EasySpec
    from jaxspec.speculative import Model, chain, speculate, tree

    m = load_model("qwen2.5-coder-0.5b-instruct")
    dcfg = dataclasses.replace(m.cfg, num_layers=8)
    draft = Model(dict(m.params, layers=m.params["layers"][:8]), dcfg)
    ids = [encode_prompt(m.tokenizer, PROMPT, chat=True), encode_prompt(m.tokenizer, "Sort a list in C.", chat=True)]
    eos = eos_ids(m.tokenizer, m.cfg)
    arr, lens, slots = pad_prompts(ids, m.cfg, 32)
    ref = output_ids(
        generate(
            m.params,
            jnp.asarray(arr),
            jnp.asarray(lens),
            jax.random.key(0),
            spec=DecodeSpec(m.cfg, 32, slots, eos_ids=eos),
        )
    )
    out = speculate(
        Model(m.params, m.cfg, tokenizer=m.tokenizer),
        draft,
        ids,
        method=chain(4) if method == "chain" else tree(3, 2),
        max_new_tokens=32,
        eos_ids=eos,
        drafter=EasySpec(parallel=3) if method == "easyspec" else None,
    )
    assert out.output_ids == ref
    assert 0 < out.stats["accepted"] < out.stats["drafted"]  # real accepts and real rejections


def test_load_in_bf16_sets_the_numerics_from_conversion_and_checkpoint(tmp_path):
    """load_model's numerics land in the config, converted or restored: bf16 params, a bf16 cache, the
    requested precision; the bf16 weights are the fp32 ones rounded."""
    name = "smollm2-135m-instruct"
    f32 = load_model(name, checkpoint_root=tmp_path / "f32")
    for _ in range(2):  # converted, then from its checkpoint
        m = load_model(name, dtype="bfloat16", precision="default", checkpoint_root=tmp_path)
        assert (m.cfg.dtype, m.cfg.precision, m.cfg.kv_dtype) == ("bfloat16", "default", jnp.bfloat16)
        assert {x.dtype for x in jax.tree.leaves(m.params)} == {jnp.dtype(jnp.bfloat16)}
        np.testing.assert_array_equal(
            np.asarray(m.params["embed"]), np.asarray(f32.params["embed"].astype(jnp.bfloat16))
        )
        assert init_cache(m.cfg, 1, 8).k[0].dtype == jnp.bfloat16
    assert m.from_checkpoint
    wide = load_model(name, dtype="bfloat16", cache_dtype="float32", checkpoint_root=tmp_path)
    assert wide.cfg.kv_dtype == jnp.float32 and wide.cfg.precision == "highest"
