"""Streaming conversion (conversion/streaming.py): each device's slice read from the file and cast as it is
placed — equal to the whole-model converters, reading each device's share only, refusing bad names before
reading anything; and the memory bound on a ≥ 2 GB synthetic checkpoint (slow)."""

import json

import jax
import numpy as np
import pytest

from conversion.gguf_loader import load_gguf
from conversion.hf_loader import load_hf_dir
from conversion.loader import load_model
from conversion.mapping import ConversionError
from conversion.streaming import open_source, stream_params
from jaxspec import make_mesh
from tests.helpers import hf_tiny


def _same(params, ref, dtype):
    got, want = jax.tree.leaves(params), jax.tree.leaves(ref)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b).astype(dtype))


@pytest.mark.parametrize(
    "mesh",
    [
        None,
        pytest.param({"tp": 2}, marks=pytest.mark.slow),
        pytest.param({"layer": 2, "tp": 4}, marks=pytest.mark.slow),
    ],
    ids=str,
)
@pytest.mark.parametrize("fmt", ["safetensors", "sharded-bf16", "gguf"])
def test_streamed_load_equals_the_whole_model_converters(tmp_path, fmt, mesh):
    """load_model's streamed first load: the same values as the whole-model converters (load_hf_dir,
    load_gguf) in the requested dtype, laid out on the mesh's plan; a bf16 checkpoint becomes bf16 params."""
    import torch

    model = hf_tiny("llama" if fmt == "gguf" else "qwen2")
    dtype = "bfloat16" if fmt == "sharded-bf16" else "float32"
    if fmt == "gguf":
        from tests.test_converters import write_gguf

        src = write_gguf(tmp_path / "m.gguf", model)
        ref = load_gguf(src)[1]
    else:
        src = tmp_path / "hf"
        if fmt == "sharded-bf16":
            model.to(torch.bfloat16).save_pretrained(src, max_shard_size="30KB")
            assert (src / "model.safetensors.index.json").exists()
        else:
            model.save_pretrained(src)
        ref = load_hf_dir(src)[1]
    m = load_model(src, mesh=make_mesh(mesh) if mesh else None, dtype=dtype, use_checkpoint=False, tokenizer=False)
    assert m.bytes_read > 0 and not m.from_checkpoint
    if mesh is None:
        _same(m.params, ref, dtype)
        return
    want = m.plan.param_shardings(m.cfg)
    for a, s in zip(jax.tree.leaves(m.params), jax.tree.leaves(want)):
        if a.shape[0] % 8 or "kv" not in str(s):  # the kv projections are re-laid out (repeated) after the read
            assert a.sharding.is_equivalent_to(s, a.ndim), (a.shape, a.sharding, s)
    plain = load_model(src, dtype=dtype, use_checkpoint=False, tokenizer=False)
    from jaxspec import forward, init_cache

    toks = np.arange(1, 9, dtype=np.int32)[None]
    a = forward(m.params, toks, init_cache(m.cfg, 1, 16), m.cfg)[0]
    b = forward(plain.params, toks, init_cache(plain.cfg, 1, 16), plain.cfg)[0]
    np.testing.assert_allclose(
        np.asarray(a, np.float32), np.asarray(b, np.float32), atol=1e-2 if fmt == "sharded-bf16" else 1e-5
    )


def test_each_device_reads_its_slice_only(tmp_path, monkeypatch):
    """On tp=8 every device's slice is read once: a split tensor in 8 parts, a replicated one once for all
    8 devices (make_array_from_callback reads each distinct index once) — the checkpoint's bytes once, not
    8 whole copies."""
    hf_tiny("qwen2", vocab_size=96, intermediate_size=64).save_pretrained(tmp_path / "hf")
    import safetensors

    cfg, source = open_source(tmp_path / "hf")
    plan = __import__("jaxspec").plan_for(cfg, make_mesh({"tp": 8}))
    from_file = []  # bytes safetensors handed over: what a read took from the file, counted outside the source
    real_open = safetensors.safe_open

    class Counting:
        def __init__(self, *a, **k):
            self.h = real_open(*a, **k)

        def __enter__(self):
            self.h.__enter__()
            return self

        def __exit__(self, *exc):
            return self.h.__exit__(*exc)

        def get_tensor(self, name):
            out = self.h.get_tensor(name)
            from_file.append(out.nbytes)
            return out

        def get_slice(self, name):
            sl = self.h.get_slice(name)

            class Slice:
                def __getitem__(_, index):
                    out = sl[index]
                    from_file.append(out.nbytes)
                    return out

            return Slice()

    monkeypatch.setattr(safetensors, "safe_open", Counting)
    params = stream_params(cfg, source, plan.param_shardings(cfg), np.float32)
    whole = sum(a.nbytes for a in jax.tree.leaves(params))
    assert any(len({str(s.index) for s in a.addressable_shards}) == 8 for a in jax.tree.leaves(params))  # split ones
    assert source.bytes_read == sum(from_file) == whole, (source.bytes_read, sum(from_file), whole)


def test_bad_names_and_shards_fail_before_any_read(tmp_path):
    """A missing, extra or mis-shaped tensor fails on the headers alone (nothing read); an index that places
    a tensor in a shard that does not hold it is an error naming the tensor."""
    from safetensors.numpy import load_file, save_file

    hf_tiny("qwen2").save_pretrained(tmp_path / "hf")
    f = tmp_path / "hf" / "model.safetensors"
    tensors = load_file(str(f))
    tensors.pop("model.layers.1.mlp.up_proj.weight")
    tensors["model.extra.weight"] = np.zeros(3, np.float32)
    save_file(tensors, str(f), metadata={"format": "pt"})
    cfg, source = open_source(tmp_path / "hf")
    with pytest.raises(ConversionError, match=r"missing params: \[\"\['layers'\]\[1\]\['w_up'\]\"\]"):
        stream_params(cfg, source, None, np.float32)
    assert source.bytes_read == 0

    hf_tiny("qwen2").save_pretrained(tmp_path / "sh", max_shard_size="20KB")
    index = tmp_path / "sh" / "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    first, last = sorted(set(doc["weight_map"].values()))[0], sorted(set(doc["weight_map"].values()))[-1]
    doc["weight_map"]["model.norm.weight"] = first if doc["weight_map"]["model.norm.weight"] != first else last
    index.write_text(json.dumps(doc))
    with pytest.raises(
        ConversionError, match=r"places tensors in shards that do not hold them: \['model.norm.weight'\]"
    ):
        open_source(tmp_path / "sh")


@pytest.mark.slow
def test_a_2gb_checkpoint_streams_within_the_memory_bound(tmp_path):
    """The memory bound, measured in processes of their own (8 simulated devices, tp=8, bf16): a first load
    of a 2.0 GB indexed bf16 Llama-3-layout checkpoint raises the peak resident memory by at most what the
    same arrays occupy when a program makes them on the devices (XLA:CPU's device arrays are host memory,
    with the allocator's overhead) plus twice the largest tensor; each byte of the files read once."""
    from experiments.conversion.streaming_memory import build, run

    path = build(tmp_path / "ckpt")
    size = sum(p.stat().st_size for p in path.glob("*.safetensors"))
    assert size >= 2e9
    streamed, floor = run(path, "tp=8", "bfloat16"), run(path, "tp=8", "bfloat16", "on_device")
    assert streamed["params_gb"] >= 2.0 and streamed["bytes_read"] <= size
    assert streamed["peak_minus_before_gb"] <= floor["peak_minus_before_gb"] + 2 * streamed["largest_tensor_gb"], (
        streamed,
        floor,
    )
