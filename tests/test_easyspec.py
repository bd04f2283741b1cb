"""EasySpec: the partition and its errors; no groups == DraftModel bit for bit; the shard_map path equals
the vmap path on 2/4/8 simulated devices with one all-gather per group step; greedy output equal to
vanilla over random pairs × partitions × policy × calibration × chain/tree × batch × mesh; calibration
leaves the draft cache equal to a sequential draft's (and `never` does not); scan == unrolled."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxspec import DecodeSpec, forward, generate, init_cache, make_mesh, output_ids, plan_for, shard_params
from jaxspec.easyspec import EasySpec, check_groups, default_groups, split_groups
from jaxspec.easyspec.calibration import CALIBRATIONS, exact_pass, stack_all_layers
from jaxspec.easyspec.layer_parallel import POLICIES, fuzzy_forward, group_step, stack_group_weights
from jaxspec.layers import attention_block, mlp_block
from jaxspec.masks import causal_mask
from jaxspec.model import embed, head
from jaxspec.sharding import shard_model
from jaxspec.speculative import DraftModel, chain, make_spec, run_speculation, tree
from tests.helpers import exact_forward, examples, hlo_collectives, random_prompts, tiny_cfg
from tests.spec_helpers import make_pair

TARGET = tiny_cfg(num_layers=3)  # vanilla_rows decodes TARGET: the EasySpec pairs share its first layers
DRAFT = tiny_cfg(num_layers=6)
BIG = tiny_cfg(num_layers=7)
N_NEW, WIDTH, SLOTS, EOS = 24, 32, 128, (7,)


def pair(seed, lam):
    """A 7-layer target whose first 6 layers are the draft (lam scales the 7th: the agreement dial)."""
    return make_pair(seed, lam, BIG, DRAFT)


def padded(prompts):
    toks = np.zeros((len(prompts), WIDTH), np.int32)
    for i, p in enumerate(prompts):
        toks[i, : len(p)] = p
    return jnp.asarray(toks), jnp.asarray([len(p) for p in prompts], jnp.int32)


def run(tp, dp, prompts, method, drafter, eos=EOS, target=BIG, plan=None):
    spec = make_spec(
        target, drafter, method, prompt_len=WIDTH, max_new_tokens=N_NEW, eos_ids=eos, max_len=SLOTS, plan=plan
    )
    return run_speculation(tp, drafter.prepare(dp), *padded(prompts), jax.random.key(0), spec=spec)


_generate = jax.jit(generate, static_argnames=("spec",))


def vanilla(tp, prompts, eos=EOS):
    """Single-prompt greedy runs of the target: the reference every speculative output must equal."""
    spec = DecodeSpec(BIG, N_NEW, SLOTS, eos_ids=eos)
    return [output_ids(_generate(tp, *padded([p]), jax.random.key(0), spec=spec))[0] for p in prompts]


# ---- the partition ---------------------------------------------------------------------------------
def test_default_partition_and_splitting():
    assert default_groups(24, 4) == (
        (0,),
        (1, 2, 3, 4),
        (5, 6, 7, 8),
        (9, 10, 11, 12),
        (13, 14, 15, 16),
        (17, 18, 19, 20),
        (21, 22),
        (23,),
    )
    assert default_groups(6, 2, head=2, tail=0) == ((0,), (1,), (2, 3), (4, 5))
    assert default_groups(3, 1) == ((0,), (1,), (2,))
    assert split_groups(((0,), (1, 2, 3, 4, 5), (6,)), 2) == ((0,), (1, 2), (3, 4), (5,), (6,))
    d = EasySpec(parallel=4).bind(DRAFT, make_mesh({"layer": 2}))
    assert d.groups == ((0,), (1, 2), (3, 4), (5,))
    assert EasySpec(parallel=4).bind(DRAFT).groups == ((0,), (1, 2, 3, 4), (5,))
    one = EasySpec(parallel=4).bind(DRAFT, make_mesh({"layer": 1, "tp": 2}))  # no layer axis to split for
    assert one.groups == ((0,), (1, 2, 3, 4), (5,)) and one.layer_mesh is None


@pytest.mark.parametrize(
    "groups,message",
    [
        ([[0], [1, 2], [2, 3], [4], [5]], "layer 2 appears in group 1 and group 2"),
        ([[0], [1, 2], [4], [5]], r"layers \[3\] are in no group \(a gap\)"),
        ([[0], [1, 2, 3, 4], [5, 6]], "layer 6 in group 2 is outside the draft's layers 0..5"),
        ([[0], [], [1, 2, 3, 4, 5]], "group 1 is empty"),
        ([[0], [2, 1], [3, 4, 5]], "groups must list consecutive layers in order, but layer 2 comes where layer 1"),
    ],
)
def test_invalid_partitions_are_errors(groups, message):
    with pytest.raises(ValueError, match="invalid layer groups: " + message):
        check_groups(groups, 6)
    with pytest.raises(ValueError, match=message):
        EasySpec(groups=groups).bind(DRAFT)


def test_configuration_errors():
    with pytest.raises(ValueError, match="head=4 and tail=3 sequential layers do not fit in the draft's 6 layers"):
        EasySpec(head=4, tail=3).bind(DRAFT)
    with pytest.raises(ValueError, match="parallel size must be >= 1, got 0"):
        EasySpec(parallel=0).bind(DRAFT)
    with pytest.raises(ValueError, match="unknown EasySpec policy 'both'"):
        EasySpec(policy="both")
    with pytest.raises(ValueError, match="unknown calibration 'sometimes'"):
        EasySpec(calibration="sometimes")
    with pytest.raises(ValueError, match="not bound to a draft model"):
        EasySpec().prepare({})
    with pytest.raises(ValueError, match="mesh .* needs 16 devices, only 8 available"):
        make_mesh({"layer": 8, "tp": 2})
    with pytest.raises(ValueError, match=r"groups \[\[1, 2, 3, 4\]\] are larger than the mesh's layer axis \(2"):
        EasySpec(groups=((0,), (1, 2, 3, 4), (5,))).bind(DRAFT, make_mesh({"layer": 2}))
    assert EasySpec(parallel=4).bind(DRAFT, make_mesh({"layer": 2})).groups[1:3] == ((1, 2), (3, 4))  # default: split


def test_python_use_on_a_mesh_binds_to_it_and_prepares_once():
    """From Python: EasySpec(mesh=m) keeps m through bind (a different draft mesh is an error); a draft
    given without a plan on a target's layer × tp mesh runs layer-parallel on the target's mesh (not
    silently on one device), equal to vanilla; params prepared once pass through `prepare` unchanged (no
    re-stacking per `speculate`)."""
    from jaxspec.speculative import Model, speculate

    mesh = make_mesh({"layer": 4, "tp": 2})
    assert EasySpec(mesh=mesh).bind(DRAFT).layer_mesh is mesh
    with pytest.raises(ValueError, match=r"EasySpec\(mesh=...\) has axes \{'layer': 4, 'tp': 2\} but it is bound"):
        EasySpec(mesh=mesh).bind(DRAFT, make_mesh({"layer": 2}))
    tp, dp = pair(3, 0.3)
    target = Model(*shard_model(tp, BIG, mesh))
    prompts = random_prompts(np.random.default_rng(12), [6, 11])
    out = speculate(target, Model(dp, DRAFT), prompts, method=chain(3), max_new_tokens=N_NEW, drafter=EasySpec())
    assert out.output_ids == vanilla(tp, prompts, eos=())
    assert out.state.draft_state.cache.k[1].sharding.mesh == mesh  # the draft's cache on the target's mesh
    es = EasySpec().bind(DRAFT, mesh)
    prepared = es.prepare(dp)
    assert es.prepare(prepared) is prepared and prepared["groups"] == (None,) * len(es.groups)
    again = speculate(target, Model(prepared, DRAFT), prompts, method=chain(3), max_new_tokens=N_NEW, drafter=es)
    assert again.output_ids == out.output_ids


# ---- equivalences ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_no_groups_is_draft_model_bit_for_bit():
    tp, dp = pair(1, 0.3)
    prompts = random_prompts(np.random.default_rng(3), [5, 17, 30])
    for method, calibrations in ((chain(4), CALIBRATIONS[::2]), (tree(3, 2), CALIBRATIONS[1::2])):
        ref = run(tp, dp, prompts, method, DraftModel(DRAFT))
        for calib in calibrations:
            got = run(tp, dp, prompts, method, EasySpec(parallel=1, calibration=calib).bind(DRAFT))
            assert output_ids(got) == output_ids(ref)
            for a, b in zip(jax.tree.leaves(got.stats), jax.tree.leaves(ref.stats)):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
            for l in range(DRAFT.num_layers):  # every committed slot's K/V, to the bit
                for i, n in enumerate(np.asarray(got.committed) - 2):
                    for c_got, c_ref in (
                        (got.draft_state.cache.k, ref.draft_state.cache.k),
                        (got.draft_state.cache.v, ref.draft_state.cache.v),
                    ):
                        np.testing.assert_array_equal(np.asarray(c_got[l][i, :, :n]), np.asarray(c_ref[l][i, :, :n]))


def _one_fuzzy_step(dp, groups, policy, mesh, T=3, seed=0):
    """The layer-parallel forward of T tokens after a 9-token exact prefix: (logits, cache)."""
    rng = np.random.default_rng(seed)
    B, S = 2, 32
    _, cache, _ = forward(dp, jnp.asarray(rng.integers(0, 97, (B, 9)), jnp.int32), init_cache(DRAFT, B, S), DRAFT)
    tokens = jnp.asarray(rng.integers(0, 97, (B, T)), jnp.int32)
    pos = cache.lengths[:, None] + jnp.arange(T, dtype=jnp.int32)
    stacked = stack_group_weights(dp, groups) if mesh is None else (None,) * len(groups)
    f = jax.jit(
        lambda p, w, t, c: fuzzy_forward(p, w, groups, t, c, pos, causal_mask(c.lengths, T, S), DRAFT, policy, mesh)
    )
    return f(dp, stacked, tokens, cache)


@pytest.mark.slow
@pytest.mark.parametrize("devices", [2, 4, 8])
@pytest.mark.parametrize("policy", POLICIES)
def test_shard_map_path_equals_vmap_path(devices, policy):
    _, dp = pair(0, 1.0)
    groups = split_groups(((0,), (1, 2, 3, 4), (5,)), devices)  # 2 devices: [1, 2], [3, 4]
    mesh = make_mesh({"layer": devices})
    ref_logits, ref_cache = _one_fuzzy_step(dp, groups, policy, None)
    logits, cache = _one_fuzzy_step(
        jax.device_put(dp, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())), groups, policy, mesh
    )
    np.testing.assert_allclose(np.asarray(logits), np.asarray(ref_logits), atol=1e-5, rtol=1e-5)
    for a, b in zip(cache.k + cache.v, ref_cache.k + ref_cache.v):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)
    exact, _ = _one_fuzzy_step(dp, tuple((l,) for l in range(DRAFT.num_layers)), policy, None)
    assert not np.allclose(np.asarray(exact), np.asarray(logits), atol=1e-3)  # the groups do change the numbers


def _naive_fuzzy_step(dp, groups, policy, T=3, seed=0):
    """An independent reference for `_one_fuzzy_step`, written from the paper's equations with the
    model's own blocks (`attention_block`, `mlp_block`, `decoder_layer`), one member at a time, no
    stacking, no packing, no combine step shared with the library: every member's attention reads the
    group input h and writes its K/V from it; ATTN_ONLY then runs x += a_j; x += MLP_j(x) in order,
    DIRECT_MLP sums h + Σ (a_j + MLP_j(h + a_j))."""
    rng = np.random.default_rng(seed)
    B, S = 2, 32
    _, cache, _ = forward(dp, jnp.asarray(rng.integers(0, 97, (B, 9)), jnp.int32), init_cache(DRAFT, B, S), DRAFT)
    tokens = jnp.asarray(rng.integers(0, 97, (B, T)), jnp.int32)
    at = cache.lengths
    pos, mask = at[:, None] + jnp.arange(T, dtype=jnp.int32), causal_mask(at, T, S)
    ks, vs, x = list(cache.k), list(cache.v), embed(dp, tokens, DRAFT)
    for g in groups:
        h, deltas = x, []
        for l in g:
            layer = dp["layers"][l]
            a, ks[l], vs[l] = attention_block(layer, h, ks[l], vs[l], pos, at, mask, DRAFT)
            deltas.append((layer, a))
        if len(g) == 1 or policy == "attn_only":
            for layer, a in deltas:
                x = x + a
                x = x + mlp_block(layer, x, DRAFT)
        else:
            x = h + sum(a + mlp_block(layer, h + a, DRAFT) for layer, a in deltas)
    return head(dp, x, DRAFT), cache.replace(k=tuple(ks), v=tuple(vs))


@pytest.mark.parametrize("devices", [None, pytest.param(4, marks=pytest.mark.slow)])
@pytest.mark.parametrize("policy", POLICIES)
def test_layer_parallel_forward_equals_a_naive_reference(devices, policy):
    """Both paths of the fuzzy forward (vmap on one device, shard_map over layer=4) against the naive
    per-member reference: logits and every layer's new K/V rows to 1e-5. (A combine that ran a member's
    MLP on the group input instead of the running residual fails this: tried.)"""
    _, dp = pair(2, 1.0)
    groups, mesh = ((0,), (1, 2, 3, 4), (5,)), make_mesh({"layer": devices}) if devices else None
    if mesh is not None:
        dp = jax.device_put(dp, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    logits, cache = _one_fuzzy_step(dp, groups, policy, mesh)
    ref_logits, ref_cache = jax.jit(lambda p: _naive_fuzzy_step(p, groups, policy))(dp)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(ref_logits), atol=1e-5, rtol=1e-5)
    for a, b in zip(cache.k + cache.v, ref_cache.k + ref_cache.v):
        np.testing.assert_allclose(np.asarray(a[:, :, :12]), np.asarray(b[:, :, :12]), atol=1e-5, rtol=1e-5)


def test_group_step_compiles_to_one_all_gather_and_no_weight_gather():
    _, dp = pair(0, 1.0)
    mesh = make_mesh({"layer": 4})
    dp = jax.device_put(dp, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    group, B, T, S = (1, 2, 3, 4), 1, 2, 32
    cache = init_cache(DRAFT, B, S)
    h = jnp.ones((B, T, DRAFT.hidden_size))
    pos = jnp.zeros((B, T), jnp.int32)

    def step(p, h, ks, vs):
        ks, vs = list(ks), list(vs)
        x = group_step(
            p,
            None,
            group,
            h,
            ks,
            vs,
            pos,
            jnp.zeros((B,), jnp.int32),
            causal_mask(jnp.zeros((B,), jnp.int32), T, S),
            DRAFT,
            "attn_only",
            mesh,
        )
        return x, ks, vs

    hlo = jax.jit(step).lower(dp, h, cache.k, cache.v).compile().as_text()
    gathers = [line for line in hlo.splitlines() if "all-gather-start(" in line or " all-gather(" in line]
    assert len(gathers) == 1, gathers
    KV = DRAFT.num_kv_heads * DRAFT.head_dim
    assert f"f32[4,{B},{T},{DRAFT.hidden_size + 2 * KV}]" in gathers[0]  # activations, not weights
    assert "all-reduce" not in hlo


def test_the_papers_layout_target_over_the_whole_mesh_draft_layer_parallel():
    """The paper's layout on layer=4 × tp=2: in the compiled speculative loop every all-reduce is the
    target's, spanning all 8 devices (two per layer per target forward: prefill and verification), and
    the only all-gather is the draft group's one per group step, over the 4 devices of "layer", of
    activations [members, B, T, D + 2·KV]; the replicated draft reduces nothing."""
    mesh = make_mesh({"layer": 4, "tp": 2})
    tp, dp = pair(0, 1.0)
    tparams, tcfg, plan = shard_model(tp, BIG, mesh)
    assert tparams["layers"][0]["w_up"].addressable_shards[0].data.shape[0] == BIG.intermediate_size // 8
    drafter = EasySpec(parallel=4, calibration="every_round").bind(DRAFT, mesh)
    spec = make_spec(tcfg, drafter, chain(3), prompt_len=WIDTH, max_new_tokens=N_NEW, max_len=SLOTS, plan=plan)
    lowered = jax.jit(run_speculation, static_argnames=("spec",)).lower(
        tparams, drafter.prepare(dp), *padded([[1, 2, 3]]), jax.random.key(0), spec=spec
    )
    got = hlo_collectives(lowered.compile().as_text(), groups=True)
    assert set(got) == {"all-reduce", "all-gather"}, got
    assert len(got["all-reduce"]) == 2 * 2 * BIG.num_layers and {g for _, g in got["all-reduce"]} == {8}, got
    KV = DRAFT.num_kv_heads * DRAFT.head_dim
    assert got["all-gather"] == [(f"f32[4,1,1,{DRAFT.hidden_size + 2 * KV}]", 4)], got["all-gather"]


@pytest.mark.parametrize("max_fuzzy", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_every_mismatch_skips_after_a_full_round_and_forces_after_max_fuzzy_rounds(max_fuzzy):
    """every_mismatch, round by round (the engine's draft and verify phases): a round calibrates (its
    draft cache exact up to the committed tokens) exactly when the previous round rejected a draft, or when
    max_fuzzy_rounds rounds in a row have skipped; both skips and forced calibrations occur."""
    from jaxspec.speculative.engine import draft_phase, spec_prefill, verify_phase

    tp, dp = pair(1, 0.0)  # the target's 7th layer off: the fuzzy draft is often right
    drafter = EasySpec(parallel=4, calibration="every_mismatch", max_fuzzy_rounds=max_fuzzy).bind(DRAFT)
    spec = make_spec(BIG, drafter, chain(2), prompt_len=WIDTH, max_new_tokens=60, max_len=SLOTS)
    dparams = drafter.prepare(dp)
    seen = {"skipped": 0, "forced": 0, "after_mismatch": 0}
    for prompt in ([5, 9, 11, 2, 40], [3, 3, 3], [17, 60, 8, 1]):
        st = spec_prefill(tp, dparams, *padded([prompt]), jax.random.key(0), spec=spec)
        full_before, skipped_in_a_row = False, 0
        while not bool(st.done[0]):
            committed = int(st.committed[0])
            st, t = draft_phase(tp, dparams, st, spec=spec)
            calibrated = int(st.draft_state.precise[0]) == committed
            forced = full_before and skipped_in_a_row == max_fuzzy
            assert calibrated == (not full_before or forced), (committed, full_before, skipped_in_a_row)
            seen["forced" if forced else "after_mismatch" if calibrated else "skipped"] += 1
            skipped_in_a_row = 0 if calibrated else skipped_in_a_row + 1
            st = verify_phase(tp, dparams, st, t, spec=spec)
            full_before = bool(st.draft_state.all_accepted[0])
    assert min(seen.values()) >= 1, seen


# ---- lossless --------------------------------------------------------------------------------------
MESHES = [None, {"layer": 2}, {"layer": 4}, {"layer": 4, "tp": 2}, {"tp": 2}]
PARTITIONS = [
    dict(parallel=2),
    dict(parallel=4),
    dict(parallel=3, head=0, tail=0),
    dict(groups=((0, 1), (2, 3), (4, 5))),
]
EASY_METHODS = [chain(1), chain(3), chain(5), chain(2, adaptive=True, k_max=5), tree(3, 2), tree(4, 3)]


@pytest.mark.slow
@settings(max_examples=examples(30))
@given(
    part=st.sampled_from(range(len(PARTITIONS))),
    policy=st.sampled_from(POLICIES),
    calib=st.sampled_from(CALIBRATIONS),
    method=st.sampled_from(range(len(EASY_METHODS))),
    batch=st.integers(1, 3),
    mesh=st.sampled_from(range(len(MESHES))),
    seed=st.integers(0, 3),
    lam=st.sampled_from([0.0, 0.3, 3.0]),
    data=st.data(),
)
def test_greedy_easyspec_equals_vanilla(part, policy, calib, method, batch, mesh, seed, lam, data):
    tp, dp = pair(seed, lam)
    lengths = data.draw(st.lists(st.integers(1, WIDTH), min_size=batch, max_size=batch))
    prompts = random_prompts(np.random.default_rng(data.draw(st.integers(0, 2**16))), lengths)
    m = make_mesh(MESHES[mesh]) if MESHES[mesh] else None
    drafter = EasySpec(policy=policy, calibration=calib, **PARTITIONS[part]).bind(DRAFT, m)
    plan = plan_for(BIG, m) if m is not None else None
    state = run(shard_params(tp, BIG, plan) if plan else tp, dp, prompts, EASY_METHODS[method], drafter, plan=plan)
    assert output_ids(state) == vanilla(tp, prompts)


@pytest.mark.slow
@pytest.mark.parametrize("calib", ["every_mismatch", "every_round"])
def test_batch_rows_equal_single_runs(calib):
    """Per-row calibration choices: a batch behaves as its rows run alone (every_mismatch rows disagree
    about skipping, so the mixed step — layer-parallel for all, exact for some — runs)."""
    from jaxspec.speculative import summarize

    tp, dp = pair(1, 0.05)
    prompts = random_prompts(np.random.default_rng(5), [3, 17, 9, 30])
    drafter = EasySpec(parallel=2, calibration=calib).bind(DRAFT)
    batch = run(tp, dp, prompts, chain(3), drafter)
    assert 0 < int(batch.stats.accepted.sum()) < int(batch.stats.drafted.sum())
    for i, p in enumerate(prompts):
        single = run(tp, dp, [p], chain(3), drafter)
        assert output_ids(single) == [output_ids(batch)[i]]
        assert summarize(single.stats) == summarize(batch.stats, [i])


# ---- calibration -----------------------------------------------------------------------------------
def _slots_match(dp, state, prompts, row, lo, hi):
    """Do the draft cache's slots [lo, hi) of `row` equal a sequential draft over the same tokens?"""
    seq = prompts[row] + output_ids(state)[row]
    assert hi <= len(seq)
    ref = exact_forward(dp, seq, DRAFT, SLOTS)[1]
    cache = state.draft_state.cache
    return all(
        np.allclose(np.asarray(c[l][row, :, lo:hi]), np.asarray(r[l][0, :, lo:hi]), atol=3e-5)
        for c, r in ((cache.k, ref.k), (cache.v, ref.v))
        for l in range(DRAFT.num_layers)
    )


@pytest.mark.slow
@pytest.mark.parametrize("method", [chain(3), tree(3, 2)], ids=["chain3", "tree3x2"])
@pytest.mark.parametrize("calib", ["every_round", "every_mismatch"])
def test_calibrated_cache_equals_a_sequential_draft(method, calib):
    tp, dp = pair(2, 0.3)
    prompts = random_prompts(np.random.default_rng(7), [4, 21, 12])
    state = run(tp, dp, prompts, method, EasySpec(parallel=2, calibration=calib).bind(DRAFT), eos=())
    T, precise = np.asarray(state.committed), np.asarray(state.draft_state.precise)
    assert (precise >= T - 2 * (method.shape.depth + 1)).all()  # calibrated lately, not only the prompt
    for i in range(len(prompts)):
        assert _slots_match(dp, state, prompts, i, 0, int(precise[i]))


@pytest.mark.slow
@pytest.mark.parametrize("calib", ["never", "prefill_only"])
def test_without_calibration_the_cache_drifts(calib):
    tp, dp = pair(2, 0.3)
    prompts = random_prompts(np.random.default_rng(7), [4, 21, 12])
    state = run(tp, dp, prompts, chain(3), EasySpec(parallel=2, calibration=calib).bind(DRAFT), eos=())
    T = np.asarray(state.committed)
    for i, p in enumerate(prompts):
        assert _slots_match(dp, state, prompts, i, 0, len(p)) == (calib == "prefill_only")  # the prompt
        end = min(int(T[i]) - 2, len(p) + len(output_ids(state)[i]))
        assert not _slots_match(dp, state, prompts, i, len(p), end)  # the generated tokens


def test_scan_calibration_equals_unrolled():
    _, dp = pair(0, 1.0)
    rng = np.random.default_rng(1)
    B, S, W = 2, 32, 5
    _, cache, _ = forward(dp, jnp.asarray(rng.integers(0, 97, (B, 7)), jnp.int32), init_cache(DRAFT, B, S), DRAFT)
    tokens = jnp.asarray(rng.integers(0, 97, (B, W)), jnp.int32)
    pos = cache.lengths[:, None] + jnp.arange(W, dtype=jnp.int32)
    at = jnp.asarray([[2], [4]], jnp.int32)
    f = jax.jit(exact_pass, static_argnames=("cfg", "scan"))
    l1, c1 = f(dp, None, tokens, cache, pos, at, cfg=DRAFT, scan=False)
    l2, c2 = f(dp, stack_all_layers(dp), tokens, cache, pos, at, cfg=DRAFT, scan=True)
    np.testing.assert_allclose(np.asarray(l1), np.asarray(l2), atol=1e-5, rtol=1e-5)
    for a, b in zip(c1.k + c1.v, c2.k + c2.v):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)
    tp, dp2 = pair(3, 0.3)
    prompts = random_prompts(np.random.default_rng(2), [6, 19])
    a = run(tp, dp2, prompts, chain(3), EasySpec(parallel=2).bind(DRAFT))
    b = run(tp, dp2, prompts, chain(3), EasySpec(parallel=2, scan_calibration=True).bind(DRAFT))
    assert output_ids(a) == output_ids(b) == vanilla(tp, prompts)
