"""The speculative engine: greedy output identical to vanilla (property-based, chains, adaptive chains and
trees, batches of 1-4), batch rows equal to single runs, caches equal to a vanilla run over the same
tokens, hand-computed statistics, and the pair/size errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxspec import DecodeSpec, generate, make_mesh, output_ids, plan_for, shard_params
from jaxspec.sharding import replicated_plan
from jaxspec.speculative import (
    DraftModel,
    Model,
    SpecStats,
    chain,
    make_spec,
    run_speculation,
    speculate,
    summarize,
    tree,
)
from tests.helpers import VOCAB, exact_forward, examples, random_prompts, tiny_cfg
from tests.spec_helpers import DRAFT, TARGET, flipped_draft, make_pair, pool_outcomes

N_NEW = 24
WIDTH = 32  # every prompt padded to this width: one compile per (method, batch)
SLOTS = 128
METHODS = (
    [chain(k) for k in range(1, 9)]
    + [chain(2, adaptive=True, k_max=6)]
    + [tree(2, 2), tree(3, 4), tree(5, 4), tree(5, 2), tree(4, 3), tree(1, 3)]
)
EOS = (7,)
_vanilla = jax.jit(generate, static_argnames=("spec",))


def vanilla_rows(tp, prompts, eos=EOS):
    spec = DecodeSpec(TARGET, N_NEW, SLOTS, eos_ids=eos)
    out = []
    for p in prompts:  # one row at a time: the reference is a single-prompt greedy run
        toks = np.zeros((1, WIDTH), np.int32)
        toks[0, : len(p)] = p
        out += output_ids(_vanilla(tp, jnp.asarray(toks), jnp.asarray([len(p)]), jax.random.key(0), spec=spec))
    return out


def spec_rows(tp, dp, prompts, method, eos=EOS):
    spec = make_spec(
        TARGET, DraftModel(DRAFT), method, prompt_len=WIDTH, max_new_tokens=N_NEW, eos_ids=eos, max_len=SLOTS
    )
    toks = np.zeros((len(prompts), WIDTH), np.int32)
    for i, p in enumerate(prompts):
        toks[i, : len(p)] = p
    lens = jnp.asarray([len(p) for p in prompts], jnp.int32)
    return run_speculation(tp, dp, jnp.asarray(toks), lens, jax.random.key(0), spec=spec)


MAX_BATCH = 4


@pytest.mark.slow
def test_greedy_speculation_equals_vanilla():
    """~120 examples × 2.5 rows: about 300 generated sequences compared per run (plus the mesh test).
    Every batch is padded to MAX_BATCH rows (filler rows repeat the first prompt and are not compared), so
    the engine compiles once per method, not per (method, batch). The rounds' accepted lengths are pooled
    over the examples: the run must have covered rejection at the first draft, partial acceptance and
    full acceptance, or equality proved little."""
    hist = {"none": 0, "partial": 0, "full": 0}

    @settings(max_examples=examples(120))
    @given(
        method=st.sampled_from(range(len(METHODS))),
        batch=st.integers(1, MAX_BATCH),
        seed=st.integers(0, 3),
        lam=st.sampled_from([0.0, 0.05, 0.3, 1.0, 3.0]),
        data=st.data(),
    )
    def check(method, batch, seed, lam, data):
        tp, dp = make_pair(seed, lam)
        lengths = data.draw(st.lists(st.integers(1, WIDTH), min_size=batch, max_size=batch))
        prompts = random_prompts(np.random.default_rng(data.draw(st.integers(0, 2**16))), lengths)
        state = spec_rows(tp, dp, prompts + [prompts[0]] * (MAX_BATCH - batch), METHODS[method])
        assert output_ids(state)[:batch] == vanilla_rows(tp, prompts)
        pool_outcomes(hist, state.stats, batch)

    check()
    rounds = sum(hist.values())
    assert min(hist.values()) >= 0.05 * rounds, hist  # each outcome in at least 5 % of the rounds


MESH_METHODS = [chain(4), tree(3, 2)]


@pytest.mark.slow
@settings(max_examples=examples(24))
@given(
    devices=st.sampled_from([1, 2, 8]),
    method=st.sampled_from(range(len(MESH_METHODS))),
    batch=st.integers(1, 4),
    lam=st.sampled_from([0.05, 1.0]),
    replicated=st.booleans(),
    data=st.data(),
)
def test_sharded_speculation_equals_vanilla(devices, method, batch, lam, replicated, data):
    """Target tensor-parallel over 1, 2 or 8 simulated devices, the draft with its own plan — tensor-
    parallel too, or whole on every device (`--draft-sharding replicated`) — against unsharded vanilla."""
    tp, dp = make_pair(0, lam)
    mesh = make_mesh({"tp": devices})
    tplan, dplan = plan_for(TARGET, mesh), (replicated_plan(mesh) if replicated else plan_for(DRAFT, mesh))
    lengths = data.draw(st.lists(st.integers(1, WIDTH), min_size=batch, max_size=batch))
    prompts = random_prompts(np.random.default_rng(data.draw(st.integers(0, 2**16))), lengths)
    spec = make_spec(
        TARGET,
        DraftModel(DRAFT, dplan),
        MESH_METHODS[method],
        prompt_len=WIDTH,
        max_new_tokens=N_NEW,
        eos_ids=EOS,
        plan=tplan,
        max_len=SLOTS,
    )
    toks = np.zeros((batch, WIDTH), np.int32)
    for i, p in enumerate(prompts):
        toks[i, : len(p)] = p
    state = run_speculation(
        shard_params(tp, TARGET, tplan),
        shard_params(dp, DRAFT, dplan),
        jnp.asarray(toks),
        jnp.asarray(lengths, jnp.int32),
        jax.random.key(0),
        spec=spec,
    )
    assert output_ids(state) == vanilla_rows(tp, prompts)


@pytest.mark.parametrize("method", [chain(4), tree(3, 2)], ids=["chain4", "tree3x2"])
def test_batch_rows_equal_single_runs_with_their_own_stats(method):
    tp, dp = make_pair(1, 0.3)
    prompts = random_prompts(np.random.default_rng(5), [3, 17, 9, 30])
    batch = spec_rows(tp, dp, prompts, method)
    assert np.asarray(batch.done).all()
    for i, p in enumerate(prompts):
        single = spec_rows(tp, dp, [p], method)
        assert output_ids(single) == [output_ids(batch)[i]]
        assert summarize(single.stats) == summarize(batch.stats, [i])


def test_bucketed_verification_equals_the_full_width():
    """An adaptive chain verifies the narrowest width bucket that holds the round's drafts (1, 2, 4, 7
    positions for k_max 6: `verification.verify_widths`). The same method with `narrow=False` verifies
    all 7 positions every round: the tokens, statistics and target cache lengths are the same."""
    from jaxspec.speculative import engine

    tp, dp = make_pair(3, 0.05)  # a close draft: k climbs from 2 (width 4) past 3 (width 7) and falls back
    prompts = random_prompts(np.random.default_rng(11), [5, 20, 31, 9])
    method, wide = chain(2, adaptive=True, k_max=6), chain(2, adaptive=True, k_max=6, narrow=False)
    for m, widths in ((method, (1, 2, 4, 7)), (wide, (7,))):
        assert (
            engine.verify_widths(
                make_spec(TARGET, DraftModel(DRAFT), m, prompt_len=WIDTH, max_new_tokens=N_NEW, max_len=SLOTS)
            )
            == widths
        )
    bucketed, full = spec_rows(tp, dp, prompts, method), spec_rows(tp, dp, prompts, wide)
    assert output_ids(full) == output_ids(bucketed)
    assert summarize(full.stats) == summarize(bucketed.stats)
    assert np.asarray(full.target_cache.lengths).tolist() == np.asarray(bucketed.target_cache.lengths).tolist()
    s = summarize(bucketed.stats)
    # the first round verifies 4 positions (k 2); a depth-4 draft accepted means a 7-wide round too
    assert s["per_position"][3] > 0 and s["accepted"] < s["drafted"], s


@pytest.mark.parametrize(
    "method", [chain(3), chain(2, adaptive=True, k_max=5), tree(3, 3)], ids=["chain3", "adaptive", "tree3x3"]
)
def test_caches_equal_a_vanilla_run_over_the_same_tokens(method):
    tp, dp = make_pair(2, 0.3)
    prompts = random_prompts(np.random.default_rng(7), [4, 21, 12])
    state = spec_rows(tp, dp, prompts, method, eos=())
    outs = output_ids(state)
    for i, (p, out) in enumerate(zip(prompts, outs)):
        seq = p + out
        for params, cfg, cache, n in (
            (tp, TARGET, state.target_cache, len(seq) - 1),
            (dp, DRAFT, state.draft_state.cache, len(seq) - 2),
        ):
            # the committed tokens in the cache: all but the newest (target), all but the newest two (draft)
            ref = exact_forward(params, seq, cfg, SLOTS)[1]
            for layer in range(cfg.num_layers):
                np.testing.assert_allclose(
                    np.asarray(cache.k[layer][i, :, :n]), np.asarray(ref.k[layer][0, :, :n]), atol=2e-5
                )
                np.testing.assert_allclose(
                    np.asarray(cache.v[layer][i, :, :n]), np.asarray(ref.v[layer][0, :, :n]), atol=2e-5
                )
        # the invariant itself: the target cache holds every committed token but the newest (`last`); the
        # last round may commit up to `depth` tokens past the budget, which the output drops
        committed = int(state.committed[i])
        assert int(state.target_cache.lengths[i]) == committed - 1 and 0 <= committed - len(seq) <= method.shape.depth


def test_stats_update_by_hand():
    s = SpecStats.zeros(2, 3)
    s = s.update(jnp.asarray([True, True]), jnp.asarray([3, 0]), jnp.int32(3))
    s = s.update(jnp.asarray([True, False]), jnp.asarray([1, 2]), jnp.int32(3))  # row 1 finished: unchanged
    assert summarize(s, [0]) == {
        "rounds": 2,
        "drafted": 6,
        "accepted": 4,
        "acceptance_rate": 4 / 6,
        "mean_accepted_length": 3.0,
        "per_position": [1.0, 0.5, 0.5],
        "histogram": [0, 1, 0, 1],
    }
    assert summarize(s, [1]) == {
        "rounds": 1,
        "drafted": 3,
        "accepted": 0,
        "acceptance_rate": 0.0,
        "mean_accepted_length": 1.0,
        "per_position": [0.0, 0.0, 0.0],
        "histogram": [1, 0, 0, 0],
    }


def test_stats_of_a_perfect_and_a_useless_draft():
    tp, dp = make_pair(3, 0.0)  # lam = 0: the draft is the target
    prompt = [[5, 6, 8]]
    # 11 tokens: 1 from prefill, then rounds of k + 1 = 5 → two rounds, all 8 drafts accepted
    out = speculate(Model(tp, TARGET), Model(dp, DRAFT), prompt, method=chain(4), max_new_tokens=11)
    assert len(out.output_ids[0]) == 11
    assert out.stats == {
        "rounds": 2,
        "drafted": 8,
        "accepted": 8,
        "acceptance_rate": 1.0,
        "mean_accepted_length": 5.0,
        "per_position": [1.0] * 4,
        "histogram": [0, 0, 0, 0, 2],
    }
    # a draft proposing the target's least likely token: nothing accepted, one token per round
    out = speculate(Model(tp, TARGET), Model(flipped_draft(dp), DRAFT), prompt, method=chain(4), max_new_tokens=11)
    assert out.stats == {
        "rounds": 10,
        "drafted": 40,
        "accepted": 0,
        "acceptance_rate": 0.0,
        "mean_accepted_length": 1.0,
        "per_position": [0.0] * 4,
        "histogram": [10, 0, 0, 0, 0],
    }
    # the adaptive chain grows k by 2 while everything is accepted: k = 2, 4, 6, 6 → 3 + 5 + 7 tokens
    out = speculate(
        Model(tp, TARGET), Model(dp, DRAFT), prompt, method=chain(2, adaptive=True, k_max=6), max_new_tokens=16
    )
    assert out.stats["drafted"] == 2 + 4 + 6 and out.stats["rounds"] == 3


def test_vocab_mismatch_is_an_error():
    tp, _ = make_pair(0, 1.0)
    other = tiny_cfg(num_layers=1, vocab_size=VOCAB + 3)
    from jaxspec import init_params

    with pytest.raises(ValueError, match="vocab mismatch: the target has 97 token ids, the draft 100"):
        speculate(Model(tp, TARGET), Model(init_params(jax.random.key(1), other), other), [[1, 2]])

    class Tok:
        def __init__(self, table):
            self.table = table

        def get_vocab(self):
            return self.table

    _, dp = make_pair(0, 1.0)
    with pytest.raises(ValueError, match="token tables differ in 2 entries"):
        speculate(
            Model(tp, TARGET, tokenizer=Tok({"a": 0, "b": 1})),
            Model(dp, DRAFT, tokenizer=Tok({"a": 1, "b": 0})),
            [[1, 2]],
        )


def test_size_errors():
    with pytest.raises(ValueError, match="cache overflow: 40 prompt \\+ 50 new tokens \\+ one round's 13-slot"):
        make_spec(TARGET, DraftModel(DRAFT), tree(4, 3), prompt_len=40, max_new_tokens=50, max_len=100)
    with pytest.raises(ValueError, match="exceed the target's 512 positions"):
        make_spec(TARGET, DraftModel(DRAFT), chain(4), prompt_len=300, max_new_tokens=210)
    with pytest.raises(ValueError, match="tree depth and width must be >= 1"):
        tree(0, 2)
    with pytest.raises(ValueError, match="adaptive chain needs 1 <= k <= k_max"):
        chain(5, adaptive=True, k_max=3)


def test_method_and_runner_errors():
    from jaxspec.bench import add_vanilla
    from jaxspec.methods import resolve
    from jaxspec.speculative import make_runner

    with pytest.raises(
        ValueError,
        match="unknown method .beam.: one of vanilla, chain, tree, easyspec, ls, fs, dv, del, ngram, cascade",
    ):
        resolve("beam")
    assert resolve("vanilla").method is None and resolve("tree", depth=3, width=2).method == tree(3, 2)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1, got 0"):
        make_spec(TARGET, DraftModel(DRAFT), chain(2), prompt_len=4, max_new_tokens=0)
    tp, _ = make_pair(0, 1.0)
    with pytest.raises(ValueError, match="method 'chain' needs a draft model"):
        make_runner(Model(tp, TARGET), None, chain(2), max_new_tokens=4, max_len=64)
    with pytest.raises(ValueError, match="the vanilla baseline ran other prompts"):
        add_vanilla([{"id": "a"}], [{"id": "b"}], {})


@pytest.mark.parametrize("method,temperature", [(chain(3), 0.0), (tree(2, 2), 0.8)])
def test_spec_runner_stream_equals_its_run(method, temperature):
    """SpecRunner streams through the one driver (`AotRunner.stream`), a round per yield, drafting and
    verification as two timed phases: for the same key it reaches the tokens and acceptance statistics
    of its on-device run, and the two phases' seconds add up to the decode time."""
    from jaxspec import SamplingConfig
    from jaxspec.speculative import make_runner

    tp, dp = make_pair(1, 0.3)  # partial agreement: rounds of different lengths
    prompts = random_prompts(np.random.default_rng(4), [5, 11])
    runner = make_runner(
        Model(tp, TARGET),
        Model(dp, DRAFT),
        method,
        max_new_tokens=N_NEW,
        max_len=SLOTS,
        sampling=SamplingConfig(temperature=temperature),
        eos_ids=EOS,
    )
    key = jax.random.key(3)
    ran = runner.run(prompts, key)
    streamed = [res for _, res in runner.stream(prompts, key)]
    last = streamed[-1]
    assert last.output_ids == ran.output_ids and last.stats == ran.stats
    assert 1 < ran.stats["mean_accepted_length"] < method.shape.depth + 1
    assert len(streamed) == 1 + max(row["rounds"] for row in ran.stats["per_row"])  # prefill, then a round each
    assert streamed[0].draft_s == streamed[0].verify_s == streamed[0].decode_s == 0.0
    for a, b in zip(streamed, streamed[1:]):
        assert b.draft_s > a.draft_s and b.verify_s > a.verify_s
        assert all(x == y[: len(x)] for x, y in zip(a.output_ids, b.output_ids))  # rows only grow
    for res in streamed:
        assert res.decode_s == pytest.approx(res.draft_s + res.verify_s)


@pytest.mark.parametrize("method", [chain(3), tree(2, 2)], ids=["chain3", "tree2x2"])
def test_edge_budgets_equal_vanilla(method):
    """max_new_tokens = 1 (the prefill's token only, no round), EOS as the very first token, and a cache of
    exactly `cache_slots_needed` slots (the last round's block ends on the last slot): each equals vanilla;
    one slot fewer is a cache-overflow error."""
    from jaxspec.speculative.engine import cache_slots_needed

    tp, dp = make_pair(2, 0.3)
    prompt = random_prompts(np.random.default_rng(9), [6])[0]
    P = len(prompt)

    def spec_run(n_new, eos, max_len):
        spec = make_spec(
            TARGET, DraftModel(DRAFT), method, prompt_len=P, max_new_tokens=n_new, eos_ids=eos, max_len=max_len
        )
        s = run_speculation(tp, dp, jnp.asarray([prompt]), jnp.asarray([P]), jax.random.key(0), spec=spec)
        return output_ids(s)[0], summarize(s.stats)["rounds"]

    def vanilla(n_new, eos):
        spec = DecodeSpec(TARGET, n_new, SLOTS, eos_ids=eos)
        return output_ids(_vanilla(tp, jnp.asarray([prompt]), jnp.asarray([P]), jax.random.key(0), spec=spec))[0]

    first = vanilla(1, ())
    assert len(first) == 1 and spec_run(1, (), SLOTS) == (first, 0)
    assert spec_run(N_NEW, (first[0],), SLOTS) == (first, 0)  # EOS at once: no round
    exact = cache_slots_needed(P, N_NEW, method.shape)
    out, rounds = spec_run(N_NEW, (), exact)
    assert out == vanilla(N_NEW, ()) and len(out) == N_NEW and rounds > 0
    with pytest.raises(ValueError, match="cache overflow"):
        make_spec(TARGET, DraftModel(DRAFT), method, prompt_len=P, max_new_tokens=N_NEW, max_len=exact - 1)


def test_analytic_speedup_by_hand():
    from jaxspec.speculative.costs import analytic_speedup

    costs = {"target_step_s": 0.1, "verify_s": 0.15, "draft_first_s": 0.05, "draft_step_s": 0.03}
    a = analytic_speedup(costs, mean_accepted_length=3.0, mean_depth=4.0)
    # a round: first draft 0.05 + 3 more at 0.03 + verification 0.15 = 0.29 s = 2.9 target steps for 3 tokens
    assert a["round_cost_in_target_steps"] == pytest.approx(2.9) and a["analytic_speedup"] == pytest.approx(3 / 2.9)
    assert a["draft_cost_ratio"] == pytest.approx(0.3) and a["verify_cost_ratio"] == pytest.approx(1.5)
    # a round that drafted nothing on average pays the first draft forward and the verification only
    assert analytic_speedup(costs, 1.0, 0.0)["round_cost_in_target_steps"] == pytest.approx(2.0)
