"""Converter strictness: a tiny GGUF written here (llama q/k permuted as llama.cpp does) matches HF
torch, and every bad input gets its error: missing / unexpected / mis-shaped tensors, a differing
head on a tied model, truncated or corrupt GGUF / safetensors / torch files, non-finite weights,
unsupported architectures."""

import jax
import numpy as np
import pytest
import torch

from conversion.gguf_loader import _BLOCK, _TOP, load_gguf
from conversion.hf_loader import load_hf_dir
from conversion.mapping import ConversionError, params_from_hf_tensors
from jaxspec import forward, init_cache
from jaxspec.config import config_from_hf
from tests.helpers import hf_tiny, to_jax

# llama.cpp's names, inverted from the loader's map (the real-GGUF tests pin the names themselves;
# here a wrong pairing, e.g. gate/up swapped, would break the logits parity below)
GGUF_NAMES = {hf: g for g, hf in _TOP.items()}
GGUF_BLOCK = {hf: g for g, hf in _BLOCK.items()}


def _state(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # convert_hf_to_gguf.py LlamaModel.permute: rotate-half → interleaved pairs
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path, model, arch="llama", edit=None, meta=None):
    """Write `model` (a tiny HF llama) as an F32 GGUF the way llama.cpp's converter lays it out."""
    import gguf

    c = model.config
    tensors = {}
    for name, w in _state(model).items():
        if name in GGUF_NAMES:
            tensors[GGUF_NAMES[name]] = w
            continue
        _, _, layer, rest = name.split(".", 3)
        if rest.endswith("q_proj.weight"):
            w = _llama_cpp_permute(w, c.num_attention_heads)
        elif rest.endswith("k_proj.weight"):
            w = _llama_cpp_permute(w, c.num_key_value_heads)
        tensors[f"blk.{layer}.{GGUF_BLOCK[rest]}"] = w
    if edit:
        edit(tensors)
    wr = gguf.GGUFWriter(str(path), arch)
    wr.add_block_count(c.num_hidden_layers)
    wr.add_context_length(c.max_position_embeddings)
    wr.add_embedding_length(c.hidden_size)
    wr.add_feed_forward_length(c.intermediate_size)
    wr.add_head_count(c.num_attention_heads)
    wr.add_head_count_kv(c.num_key_value_heads)
    wr.add_rope_freq_base(c.rope_theta if hasattr(c, "rope_theta") else c.rope_parameters["rope_theta"])
    wr.add_layer_norm_rms_eps(c.rms_norm_eps)
    if meta:
        meta(wr)
    for name, w in tensors.items():
        wr.add_tensor(name, np.ascontiguousarray(w, np.float32))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return path


def test_tiny_gguf_llama_matches_hf(tmp_path):
    model = hf_tiny("llama")
    cfg, params = load_gguf(write_gguf(tmp_path / "m.gguf", model))
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.tie_embeddings) == (8, 2, False)
    ids = np.random.default_rng(1).integers(0, 97, size=(1, 24)).astype(np.int32)
    with torch.no_grad():
        ref = model(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    logits, _, _ = jax.jit(lambda p, t, c: forward(p, t, c, cfg))(to_jax(params), ids, init_cache(cfg, 1, 32))
    np.testing.assert_allclose(np.asarray(logits), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "edit, msg",
    [
        (lambda t: t.pop("blk.1.ffn_up.weight"), r"missing params: \[\"\['layers'\]\[1\]\['w_up'\]\"\]"),
        (lambda t: t.__setitem__("blk.0.ssm_x.weight", np.zeros((4, 4), np.float32)), "unexpected GGUF tensors.*ssm_x"),
        (lambda t: t.__setitem__("blk.0.ffn_up.weight", np.zeros((60, 32), np.float32)), "mis-shaped.*up_proj"),
        (lambda t: t["blk.2.attn_v.weight"].__setitem__((0, 0), np.nan), "attn_v.weight: non-finite"),
    ],
)
def test_gguf_bad_tensors(tmp_path, edit, msg):
    with pytest.raises(ConversionError, match=msg):
        load_gguf(write_gguf(tmp_path / "m.gguf", hf_tiny("llama"), edit=edit))


def test_gguf_without_embedding_or_with_rope_scaling(tmp_path):
    with pytest.raises(ConversionError, match="GGUF has no token_embd.weight tensor"):
        load_gguf(write_gguf(tmp_path / "a.gguf", hf_tiny("llama"), edit=lambda t: t.pop("token_embd.weight")))
    with pytest.raises(ConversionError, match="GGUF rope scaling is not supported"):
        load_gguf(
            write_gguf(
                tmp_path / "b.gguf",
                hf_tiny("llama"),
                meta=lambda w: w.add_rope_scaling_type(__import__("gguf").RopeScalingType.LINEAR),
            )
        )


def test_gguf_unsupported_arch_and_truncation(tmp_path):
    with pytest.raises(ConversionError, match="unsupported GGUF architecture 'mamba'"):
        load_gguf(write_gguf(tmp_path / "a.gguf", hf_tiny("llama"), arch="mamba"))
    good = write_gguf(tmp_path / "b.gguf", hf_tiny("llama")).read_bytes()
    (tmp_path / "c.gguf").write_bytes(good[: len(good) * 2 // 3])
    with pytest.raises(ConversionError, match="not a readable GGUF file"):
        load_gguf(tmp_path / "c.gguf")


def test_mapping_reports_every_problem_at_once():
    model = hf_tiny("qwen2")
    cfg = config_from_hf(model.config.to_dict())
    sd = _state(model)
    sd.pop("model.layers.0.self_attn.k_proj.bias")
    sd["model.layers.1.mlp.down_proj.weight"] = sd["model.layers.1.mlp.down_proj.weight"].T.copy()
    sd["model.layers.7.mlp.up_proj.weight"] = np.zeros((64, 32), np.float32)  # beyond num_layers
    sd["model.rotary.extra"] = np.zeros(3, np.float32)
    with pytest.raises(ConversionError) as e:
        params_from_hf_tensors(cfg, sd)
    text = str(e.value)
    assert "['layers'][0]['bk']" in text
    assert "model.layers.7.mlp.up_proj.weight" in text and "model.rotary.extra" in text
    assert "model.layers.1.mlp.down_proj.weight: (64, 32)" in text


def test_tied_model_with_a_different_head_is_rejected():
    model = hf_tiny("qwen2", tie_word_embeddings=True)
    cfg = config_from_hf(model.config.to_dict())
    sd = _state(model)
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"].copy()
    params_from_hf_tensors(cfg, sd)  # an exact copy of the embedding is accepted
    sd["lm_head.weight"][0, 0] += 1.0
    with pytest.raises(ConversionError, match="ties embeddings but the stored head differs"):
        params_from_hf_tensors(cfg, sd)


def test_corrupt_hf_files(tmp_path):
    model = hf_tiny("qwen2")
    model.save_pretrained(tmp_path / "st")
    f = tmp_path / "st" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(ConversionError, match="corrupt safetensors"):
        load_hf_dir(tmp_path / "st")

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "st" / "config.json").read_text())
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"not a torch file")
    with pytest.raises(ConversionError, match="corrupt torch state dict"):
        load_hf_dir(tmp_path / "bin")

    (tmp_path / "bin" / "pytorch_model.bin").unlink()
    with pytest.raises(ConversionError, match="no weights in"):
        load_hf_dir(tmp_path / "bin")


def test_hf_index_errors(tmp_path):
    model = hf_tiny("qwen2")
    model.save_pretrained(tmp_path / "sh", max_shard_size="20KB")
    shards = sorted((tmp_path / "sh").glob("model-*.safetensors"))
    shards[-1].unlink()
    with pytest.raises(ConversionError, match="names shard files that do not exist"):
        load_hf_dir(tmp_path / "sh")

    model.save_pretrained(tmp_path / "dup")
    from safetensors.numpy import save_file

    save_file({"model.norm.weight": np.ones(32, np.float32)}, str(tmp_path / "dup" / "extra.safetensors"))
    (tmp_path / "dup" / "model.safetensors").rename(tmp_path / "dup" / "a.safetensors")
    with pytest.raises(ConversionError, match=r"tensors stored twice across shards: \['model.norm.weight'\]"):
        load_hf_dir(tmp_path / "dup")
