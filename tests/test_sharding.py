"""Sharded == unsharded on 1/2/4/8 simulated devices; invalid meshes give clear errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec import DecodeSpec, forward, generate, init_cache, init_params, make_mesh, output_ids, pad_prompts, plan_for
from jaxspec.sharding import parse_mesh, shard_params
from tests.helpers import random_prompts, tiny_cfg

# 8 query heads, 2 kv heads: tp=4 and tp=8 exercise replicated K/V (GQA with fewer kv heads than devices)
CFG = tiny_cfg(vocab_size=96)
PARAMS = init_params(jax.random.key(0), CFG, scale=0.15)


def _run(params, plan, prompts):
    arr, lens, slots = pad_prompts(prompts, CFG, 8)
    spec = DecodeSpec(CFG, 8, slots, plan=plan)
    logits, _, _ = jax.jit(lambda p, t, c: forward(p, t, c, CFG))(params, jnp.asarray(arr), init_cache(CFG, len(prompts), 32))
    return np.asarray(logits), output_ids(generate(params, jnp.asarray(arr), jnp.asarray(lens), jax.random.key(0), spec=spec))


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_tensor_parallel_equals_unsharded(tp):
    prompts = random_prompts(np.random.default_rng(tp), [5, 9], vocab=96)
    ref_logits, ref_ids = _run(PARAMS, None, prompts)
    plan = plan_for(CFG, make_mesh({"tp": tp}))
    sharded = shard_params(PARAMS, CFG, plan)
    wq = sharded["layers"][0]["wq"]
    assert len({s.device for s in wq.addressable_shards}) == tp
    assert wq.addressable_shards[0].data.shape[0] == CFG.num_heads // tp * CFG.head_dim
    logits, ids = _run(sharded, plan, prompts)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
    assert ids == ref_ids


def test_kv_heads_sharded_when_divisible():
    plan = plan_for(CFG, make_mesh({"tp": 2}))
    assert plan.spec(("embed", "kv_heads", "head_dim"))[1] == "tp"
    plan = plan_for(CFG, make_mesh({"tp": 4}))
    assert plan.spec(("embed", "kv_heads", "head_dim"))[1] is None


def test_make_mesh_is_jaxs_with_auto_axes():
    mesh = make_mesh({"layer": 2, "tp": 4})
    assert dict(mesh.shape) == {"layer": 2, "tp": 4} and mesh.axis_names == ("layer", "tp")
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,) * 2  # jax.make_mesh's default is Explicit
    assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in jax.devices()[:8])
    assert make_mesh().shape == {"tp": len(jax.devices())}
    with pytest.raises(ValueError, match="needs 16 devices, only 8 available"):
        make_mesh({"tp": 16})


def test_mesh_errors():
    with pytest.raises(ValueError, match="does not divide the 6 attention heads"):
        plan_for(tiny_cfg(num_heads=6, num_kv_heads=2), make_mesh({"tp": 4}))
    with pytest.raises(ValueError, match="neither divides"):
        plan_for(tiny_cfg(num_heads=12, num_kv_heads=3, intermediate_size=64), make_mesh({"tp": 4}))
    with pytest.raises(ValueError, match="MLP width"):
        plan_for(tiny_cfg(intermediate_size=36), make_mesh({"tp": 8}))
    with pytest.raises(ValueError, match="needs 16 devices"):
        make_mesh({"tp": 16})
    with pytest.raises(ValueError, match="bad mesh spec"):
        parse_mesh("tp:2")
    assert parse_mesh("tp=2").shape == {"tp": 2}


def test_load_model_restores_checkpoint_into_the_sharding(tmp_path):
    from conversion.loader import load_model
    from tests.helpers import hf_tiny
    hf_tiny("qwen2").save_pretrained(tmp_path / "hf")
    mesh = make_mesh({"tp": 2})
    first = load_model(tmp_path / "hf", mesh=mesh, tokenizer=False, checkpoint_root=tmp_path / "ckpt")
    again = load_model(tmp_path / "hf", mesh=mesh, tokenizer=False, checkpoint_root=tmp_path / "ckpt")
    assert (first.from_checkpoint, again.from_checkpoint) == (False, True)
    want = first.plan.param_shardings(first.cfg)
    for a, b, s in zip(jax.tree.leaves(first.params), jax.tree.leaves(again.params), jax.tree.leaves(want)):
        assert b.sharding.is_equivalent_to(s, b.ndim)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(again.params["layers"][0]["w_up"].addressable_shards[0].data) == first.cfg.intermediate_size // 2
