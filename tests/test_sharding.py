"""Sharded == unsharded on 1/2/4/8 simulated devices; what tp cannot split is replicated; the compiled
program's collectives; invalid meshes give clear errors."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec import (
    DecodeSpec,
    forward,
    generate,
    init_cache,
    init_params,
    make_mesh,
    output_ids,
    pad_prompts,
    plan_for,
    prefill,
)
from jaxspec.sharding import kv_repeats, parse_mesh, repeat_kv_heads, shard_model, shard_params
from tests.helpers import hlo_collectives, random_prompts, tiny_cfg

# 8 query heads, 2 kv heads: tp=4 and tp=8 exercise replicated K/V (GQA with fewer kv heads than devices)
CFG = tiny_cfg(vocab_size=96)
PARAMS = init_params(jax.random.key(0), CFG, scale=0.15)


def _run(params, plan, prompts, cfg=CFG):
    arr, lens, slots = pad_prompts(prompts, cfg, 8)
    spec = DecodeSpec(cfg, 8, slots, plan=plan)
    logits, _, _ = jax.jit(lambda p, t, c: forward(p, t, c, cfg))(
        params, jnp.asarray(arr), init_cache(cfg, len(prompts), 32)
    )
    return np.asarray(logits), output_ids(
        generate(params, jnp.asarray(arr), jnp.asarray(lens), jax.random.key(0), spec=spec)
    )


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


UNEVEN = [  # (config, tp, what plan_for must replicate)
    (
        tiny_cfg(vocab_size=96, num_heads=6, num_kv_heads=2),
        4,
        "attention replicated: tp=4 does not divide the 6 query heads",
    ),
    (tiny_cfg(vocab_size=96, num_heads=12, num_kv_heads=3), 4, "attention replicated: tp=4 and the 3 kv heads"),
    (tiny_cfg(vocab_size=96, intermediate_size=36), 8, "MLP replicated: tp=8 does not divide the MLP width 36"),
    (
        tiny_cfg(vocab_size=97, num_heads=14, num_kv_heads=2, intermediate_size=56),
        4,
        "attention replicated: tp=4 does not divide the 14 query heads",
    ),  # the 0.5B's heads at tp=4
]


@pytest.mark.parametrize("cfg, tp, note", UNEVEN, ids=lambda x: str(x)[:40] if isinstance(x, str) else None)
def test_what_tp_cannot_split_is_replicated(cfg, tp, note):
    """Heads or an MLP width that tp does not divide are replicated, not an error: the plan says so, the
    replicated weights are whole on every device, the split ones split, and the output is unsharded's."""
    params = init_params(jax.random.key(1), cfg, scale=0.15)
    plan = plan_for(cfg, make_mesh({"tp": tp}))
    assert any(n.startswith(note) for n in plan.notes), plan.notes
    sharded = shard_params(params, cfg, plan)
    layer = sharded["layers"][0]
    attn_split, mlp_split = "attention" not in note, "MLP" not in note
    assert layer["wq"].addressable_shards[0].data.shape[0] == cfg.num_heads * cfg.head_dim // (tp if attn_split else 1)
    assert layer["w_up"].addressable_shards[0].data.shape[0] == cfg.intermediate_size // (tp if mlp_split else 1)
    prompts = random_prompts(np.random.default_rng(tp), [5, 9], vocab=cfg.vocab_size)
    ref_logits, ref_ids = _run(params, None, prompts, cfg)
    logits, ids = _run(sharded, plan, prompts, cfg)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
    assert ids == ref_ids


def test_even_plans_have_no_notes_but_gqa():
    assert plan_for(CFG, make_mesh({"tp": 2})).notes == ()
    assert plan_for(CFG, make_mesh({"tp": 4})).notes == ("kv heads replicated: 2 kv heads for tp=4 (GQA)",)


def test_mesh_errors():
    with pytest.raises(ValueError, match="needs 16 devices"):
        make_mesh({"tp": 16})
    with pytest.raises(ValueError, match="bad mesh spec"):
        parse_mesh("tp:2")
    assert parse_mesh("tp=2").shape == {"tp": 2}


def _collectives(cfg, tp, expand=True, groups=False):
    """The compiled whole generation (prefill + decode loop) on a mesh (`tp`: an int for {"tp": tp}, or the
    axes): {kind: [result shape]} (`groups`: [(result shape, devices per replica group)]), with the model
    placed as load_model places it (`shard_model`: kv heads repeated for GQA) or (`expand` False) by
    plan_for alone."""
    mesh = make_mesh({"tp": tp} if isinstance(tp, int) else tp)
    params = init_params(jax.random.key(0), cfg)
    if expand:
        params, cfg, plan = shard_model(params, cfg, mesh)
    else:
        plan = plan_for(cfg, mesh)
        params = shard_params(params, cfg, plan)
    arr, lens, slots = pad_prompts([[1, 2, 3]] * mesh.shape.get("data", 1), cfg, 8)
    txt = (
        jax.jit(generate, static_argnames=("spec",))
        .lower(
            params, jnp.asarray(arr), jnp.asarray(lens), jax.random.key(0), spec=DecodeSpec(cfg, 8, slots, plan=plan)
        )
        .compile()
        .as_text()
    )
    return hlo_collectives(txt, groups)


def test_compiled_decode_moves_activations_only():
    """tp=2 (heads, kv heads, MLP and vocab split): the compiled program — prefill and the loop's step —
    all-reduces twice per layer per forward (after attention, after the MLP; activations stay replicated)
    plus once per forward for the embedding lookup from the vocab-sharded table, each a [tokens, D]
    activation, and gathers only the vocab-sharded argmax's (value, index) pairs: no parameter and no
    cache is ever gathered."""
    got = _collectives(CFG, 2)
    assert set(got) <= {"all-reduce", "all-gather"}, got
    assert len(got["all-reduce"]) == 2 * 2 * CFG.num_layers + 2, got["all-reduce"]
    sizes = [math.prod(int(d) for d in re.findall(r"\d+", s.split("[")[1])) for s in got["all-reduce"]]
    assert all(n in (CFG.hidden_size, 16 * CFG.hidden_size) for n in sizes), got["all-reduce"]  # 1 or 16 tokens
    assert all(s.startswith(("f32[1,2]", "s32[1,2]")) for s in got["all-gather"]), got["all-gather"]


def test_compiled_gqa_decode_gathers_no_cache():
    """GQA with fewer kv heads (2) than tp (4). Placed by plan_for alone (kv projections and cache
    replicated), XLA used to compute the cache write split by kv head and all-gather every layer's whole
    cache at every step — the loop's output cache had no declared layout, and propagation chose the
    split one; the entry points' declared output layout (sharding.constrain_rows) keeps it as the plan
    says, and no cache is gathered. With the kv heads repeated (shard_model, load_model) the cache is
    split by head, and the program is tp=2's: two activation all-reduces per layer per forward."""
    cache = f"f32[1,{CFG.num_kv_heads},"
    for expand in (False, True):
        got = _collectives(CFG, 4, expand=expand)
        assert set(got) <= {"all-reduce", "all-gather"}, got
        assert not [s for s in got.get("all-gather", []) if s.startswith(cache)], (expand, got["all-gather"])
        assert len(got["all-reduce"]) == 2 * 2 * CFG.num_layers + 2, got["all-reduce"]
        assert all(s.startswith(("f32[1,4]", "s32[1,4]")) for s in got.get("all-gather", [])), got["all-gather"]


@pytest.mark.parametrize("tp", [4, 8])
def test_repeated_kv_heads_equal_unsharded(tp):
    """kv heads repeated tp / Hkv times: the same model (unsharded, logits to 1e-5, tokens exactly), and
    sharded on tp devices one kv head each, equal to the unsharded original; the plan says what was done.
    The repeated K/V projections are wider GEMMs, which XLA:CPU blocks (and so sums) in another order
    depending on the CPU: 1e-6 held where CI ran before; an AVX-512 AMD EPYC box differed by 1.2e-6."""
    r = kv_repeats(CFG, make_mesh({"tp": tp}))
    assert r == tp // CFG.num_kv_heads
    prompts = random_prompts(np.random.default_rng(tp), [5, 9], vocab=96)
    ref_logits, ref_ids = _run(PARAMS, None, prompts)
    rep, rcfg = repeat_kv_heads(PARAMS, CFG, r)
    assert rcfg.num_kv_heads == tp and rep["layers"][0]["wk"].shape == (tp * CFG.head_dim, CFG.hidden_size)
    np.testing.assert_array_equal(
        np.asarray(rep["layers"][1]["bv"]).reshape(tp, -1)[r - 1],
        np.asarray(PARAMS["layers"][1]["bv"]).reshape(CFG.num_kv_heads, -1)[0],
    )
    logits, ids = _run(rep, None, prompts, rcfg)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
    assert ids == ref_ids
    sharded, scfg, plan = shard_model(PARAMS, CFG, make_mesh({"tp": tp}))
    assert scfg == rcfg and any(n.startswith(f"kv heads repeated {r}x") for n in plan.notes), plan.notes
    assert sharded["layers"][0]["wk"].addressable_shards[0].data.shape[0] == CFG.head_dim  # one kv head a device
    logits, ids = _run(sharded, plan, prompts, scfg)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
    assert ids == ref_ids
    assert kv_repeats(CFG, make_mesh({"tp": 2})) == 1 and kv_repeats(CFG, None) == 1
    assert kv_repeats(tiny_cfg(num_heads=12, num_kv_heads=3), make_mesh({"tp": 4})) == 1  # attention replicated


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


def test_load_model_repeats_gqa_kv_heads_for_tp(tmp_path):
    """load_model at tp=4 of a model with 2 kv heads: converted or restored, it comes back with 4 (one per
    device; the checkpoint keeps 2) and computes the unsharded model's logits."""
    from conversion.loader import load_model
    from tests.helpers import hf_tiny

    hf_tiny("qwen2").save_pretrained(tmp_path / "hf")
    kw = dict(tokenizer=False, checkpoint_root=tmp_path / "ckpt")
    mesh = make_mesh({"tp": 4})
    first, again, plain = (
        load_model(tmp_path / "hf", mesh=mesh, **kw),
        load_model(tmp_path / "hf", mesh=mesh, **kw),
        load_model(tmp_path / "hf", **kw),
    )
    assert (first.from_checkpoint, again.from_checkpoint, plain.cfg.num_kv_heads) == (False, True, 2)
    prompts = random_prompts(np.random.default_rng(3), [4, 7], vocab=plain.cfg.vocab_size)
    ref_logits, ref_ids = _run(plain.params, None, prompts, plain.cfg)
    for m in (first, again):
        assert m.cfg.num_kv_heads == 4 and any(n.startswith("kv heads repeated 2x") for n in m.plan.notes)
        assert m.params["layers"][0]["wv"].addressable_shards[0].data.shape[0] == m.cfg.head_dim
        logits, ids = _run(m.params, m.plan, prompts, m.cfg)
        np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
        assert ids == ref_ids


@pytest.mark.parametrize("axes", [{"data": 2, "tp": 4}, {"data": 4, "tp": 2}, {"data": 8}], ids=str)
def test_data_axis_splits_the_batch(axes):
    """A `data` mesh axis shards the batch: 8 rows, the cache's rows split over `data` (and its heads over
    `tp`), the output equal to the unsharded run's."""
    mesh = make_mesh(axes)
    params, cfg, plan = shard_model(PARAMS, CFG, mesh)
    prompts = random_prompts(np.random.default_rng(5), [5, 9, 3, 7, 4, 8, 6, 2], vocab=96)
    ref_logits, ref_ids = _run(PARAMS, None, prompts)
    logits, ids = _run(params, plan, prompts, cfg)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
    assert ids == ref_ids
    arr, lens, slots = pad_prompts(prompts, cfg, 8)
    state = prefill(
        params, jnp.asarray(arr), jnp.asarray(lens), jax.random.key(0), spec=DecodeSpec(cfg, 8, slots, plan=plan)
    )
    k = state.cache.k[0]
    assert k.sharding.spec[0] == "data" and k.addressable_shards[0].data.shape[0] == 8 // axes["data"]
    assert k.addressable_shards[0].data.shape[1] == cfg.num_kv_heads // axes.get("tp", 1)


def test_data_axis_speculation_equals_vanilla_and_rejects_an_uneven_batch():
    from jaxspec.speculative import Model, chain, speculate
    from tests.spec_helpers import DRAFT, TARGET, make_pair

    mesh = make_mesh({"data": 2, "tp": 2})
    tp_, dp_ = make_pair(3, 0.3)
    prompts = random_prompts(np.random.default_rng(6), [5, 11, 3, 8])
    want = speculate(Model(tp_, TARGET), Model(dp_, DRAFT), prompts, method=chain(3), max_new_tokens=12)
    target = Model(*shard_model(tp_, TARGET, mesh))
    draft = Model(*shard_model(dp_, DRAFT, mesh))
    got = speculate(target, draft, prompts, method=chain(3), max_new_tokens=12)
    assert got.output_ids == want.output_ids and got.stats["accepted"] == want.stats["accepted"] > 0
    with pytest.raises(ValueError, match="a batch of 3 rows does not divide over the mesh's 'data' axis of size 2"):
        speculate(target, draft, prompts[:3], method=chain(3), max_new_tokens=12)


def test_entry_points_lay_out_their_outputs_as_declared():
    """The jitted entry points' outputs come out in the declared layout (their out_shardings,
    sharding.constrain_rows): on a data=2 × tp=4 mesh the target cache's rows over "data" and kv heads
    over "tp", every per-row array's rows over "data" and nothing over "tp", scalars and the key
    replicated — vanilla's prefill / step / loop, the engine's prefill / draft and verify phases / loop."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxspec.decode import decode_loop, decode_step
    from jaxspec.speculative import DraftModel, chain, make_spec
    from jaxspec.speculative.engine import draft_phase, spec_loop, spec_prefill, verify_phase
    from tests.spec_helpers import DRAFT, TARGET, make_pair

    mesh = make_mesh({"data": 2, "tp": 4})

    def check(cache, *arrays):
        for a in arrays:
            want = NamedSharding(mesh, P("data", *(None,) * (a.ndim - 1)) if a.ndim else P())
            assert a.sharding.is_equivalent_to(want, a.ndim), (a.shape, a.sharding)
        for a in (*cache.k, *cache.v):
            assert a.sharding.is_equivalent_to(NamedSharding(mesh, P("data", "tp", None, None)), 4), a.sharding
        assert cache.lengths.sharding.is_equivalent_to(NamedSharding(mesh, P("data")), 1)

    prompts = random_prompts(np.random.default_rng(8), [5, 9, 3, 7], vocab=96)
    params, cfg, plan = shard_model(PARAMS, CFG, mesh)
    arr, lens, slots = pad_prompts(prompts, cfg, 8)
    spec = DecodeSpec(cfg, 8, slots, plan=plan)
    s = prefill(params, jnp.asarray(arr), jnp.asarray(lens), jax.random.key(0), spec=spec)
    check(s.cache, s.tokens, s.last, s.done, s.num, s.step, s.key)
    s = decode_step(params, s, spec=spec)
    check(s.cache, s.tokens, s.last, s.done, s.num, s.step, s.key)
    s = decode_loop(params, s, spec=spec)
    check(s.cache, s.tokens, s.last, s.done, s.num, s.step, s.key)

    tp_, dp_ = make_pair(4, 0.3)
    (tparams, tcfg, tplan), (dparams, dcfg, dplan) = shard_model(tp_, TARGET, mesh), shard_model(dp_, DRAFT, mesh)
    prompts = random_prompts(np.random.default_rng(9), [5, 11, 3, 8])
    arr, lens, _ = pad_prompts(prompts, tcfg, 10)
    sspec = make_spec(tcfg, DraftModel(dcfg, dplan), chain(3), prompt_len=arr.shape[1], max_new_tokens=10, plan=tplan)
    fields = lambda st: (  # noqa: E731
        st.target_cache,
        st.tokens,
        st.last,
        st.committed,
        st.num,
        st.done,  # noqa: E731
        *jax.tree.leaves(st.stats),
        st.key,
    )
    st = spec_prefill(tparams, dparams, jnp.asarray(arr), jnp.asarray(lens), jax.random.key(1), spec=sspec)
    check(*fields(st))
    st, t = draft_phase(tparams, dparams, st, spec=sspec)
    check(*fields(st))
    st = verify_phase(tparams, dparams, st, t, spec=sspec)
    check(*fields(st))
    check(*fields(spec_loop(tparams, dparams, st, spec=sspec)))
