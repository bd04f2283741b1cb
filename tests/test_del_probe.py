"""DEL while it prefers plain decoding (jaxspec/selfspec/del_drafter.py, engine `_plain_phase`): rounds
with d* = 0 run as plain decoding steps in the engine's inner loop, probes among them; the probe
schedule (gaps doubling up to `probe`); a probe observes only the `probe_exits` exits with the best
optimistic TPL (exit_stats.probe_pick); and all of it leaves tokens, statistics, decisions and traces
exactly as the streaming mode's full rounds give them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec import init_params, output_ids
from jaxspec.cache import init_cache
from jaxspec.masks import causal_mask
from jaxspec.selfspec import DEL, ExitStats, exit_stats
from jaxspec.speculative import chain, summarize
from jaxspec.speculative.seam import HeadRows
from jaxspec.speculative.verification import verification_pass
from tests.helpers import random_prompts
from tests.test_del import CFG, N_NEW, damped, run, vanilla


def probe_rounds(rounds: int, longest: int) -> int:
    """Probe rounds among the first `rounds` while every probe chooses plain decoding: the seeding counts
    as one, then the gaps double, 2, 4, … up to `longest` (1: every round)."""
    n, r, gap = 0, 0, 1
    while True:
        gap = min(2 * gap, longest)
        r += gap - 1  # the plain rounds before the next probe
        if r >= rounds:
            return n
        n, r = n + 1, r + 1


def test_probe_pick_by_hand():
    """The optimistic score: (matched + 1) / (observed + 1) through TPL, best over d >= 1, top k."""
    exits, G = (1, 2, 4, 5), 6
    cost = exit_stats.layer_costs(exits, CFG.num_layers, G)
    counts = np.array(
        [
            [0.0, 30.0],  # seen to disagree, often: last
            [0.0, 0.3],  # disagreed, but few (decayed) observations back: worth a look
            [9.0, 1.0],  # agrees
            [2.0, 2.0],
        ],
        np.float32,
    )
    rng = np.random.default_rng(0)
    for c in [counts] + [rng.uniform(0, 10, (4, 2)).astype(np.float32) for _ in range(20)]:
        a = (c[:, 0] + 1) / (c.sum(1) + 1)
        score = [max(sum(a[i] ** j for j in range(d + 1)) / cost[i, d] for d in range(1, G)) for i in range(4)]
        for k in (1, 2, 3):
            want = sorted(np.argsort(score, kind="stable")[::-1][:k])
            got = exit_stats.probe_pick(ExitStats(c, np.zeros_like(c)), cost, k)
            assert list(np.asarray(got)) == want
    assert list(np.asarray(exit_stats.probe_pick(ExitStats(counts, counts), cost, 2))) == [1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("probe", [1, 4, 32])
@pytest.mark.parametrize("streaming", [False, True])
def test_plain_rounds_gather_statistics_in_probe_rounds_only(probe, streaming):
    """Random weights: TPL prefers plain decoding every round; with ω = 1 the counts are the seeded
    columns plus one column per probe round (gaps 2, 4, … up to `probe`) — whether the engine runs the
    rounds as plain steps in its inner loop (spec_loop) or as full rounds (streaming)."""
    tp = init_params(jax.random.key(0), CFG, scale=0.15)
    prompts = random_prompts(np.random.default_rng(1), [20])
    state = run(tp, prompts, chain(6), DEL(cost="layers", exits=(2, 4), omega=1.0, probe=probe), streaming=streaming)
    assert output_ids(state) == vanilla(tp, prompts)
    ds = state.draft_state
    R = int(ds.rounds)
    assert (np.asarray(ds.trace.exit_layer[:R]) == 0).all() and R == N_NEW - 1  # plain steps only
    seeded = min(DEL(cost="layers").seed_context + 1, 20)
    np.testing.assert_allclose(np.asarray(ds.stats.counts).sum(1), seeded + probe_rounds(R, probe))


@pytest.mark.slow
@pytest.mark.parametrize("k", [0, 1, 3])
@pytest.mark.parametrize("streaming", [False, True])
def test_a_probe_observes_the_picked_exits_only(k, streaming):
    """Plain decoding throughout, ω = 1: the seeding observes all 4 exits, each probe `k` of them (0:
    all) — on device only their rows go through the head, in full rounds the others are ignored."""
    tp = init_params(jax.random.key(0), CFG, scale=0.15)
    prompts = random_prompts(np.random.default_rng(1), [20])
    d = DEL(cost="layers", exits=(1, 2, 4, 5), omega=1.0, probe=4, probe_exits=k)
    state = run(tp, prompts, chain(6), d, streaming=streaming)
    assert output_ids(state) == vanilla(tp, prompts)
    ds = state.draft_state
    R = int(ds.rounds)
    assert (np.asarray(ds.trace.exit_layer[:R]) == 0).all()
    seeded, probes = min(d.seed_context + 1, 20), probe_rounds(R, 4)
    counts = np.asarray(ds.stats.counts).sum(1)  # observations per exit
    np.testing.assert_allclose(counts.sum(), 4 * seeded + (k or 4) * probes)
    assert (counts >= seeded).all() and (counts <= seeded + probes).all()
    assert d.bind(CFG).describe()["probe_exits"] == (k or 4)


@pytest.mark.slow
@pytest.mark.parametrize("seed, damp", [(0, (1, 1, 1, 0.6, 0.3, 0.1)), (1, (1, 1, 0.8, 0.5, 0.3, 0.2))])
def test_plain_step_inner_loop_equals_full_rounds(seed, damp):
    """The rounds DEL decodes plainly, run as plain steps in the engine's inner loop (its probes with
    the picked exits' rows only), change nothing: tokens, acceptance statistics, DEL's statistics,
    decisions and traces equal the streaming mode's, which runs every round in full (a model that
    drafts in some rounds and decodes plainly in others)."""
    tp = damped(seed, damp)
    prompts = random_prompts(np.random.default_rng(seed), [9, 14])
    d = DEL(exits=(2, 4, 5), probe=4, head_cost=6.0)  # a costly head: plain decoding wins some rounds
    assert d.bind(CFG).describe()["probe_exits"] == 2  # of 3: the pick matters
    a, b = run(tp, prompts, chain(6), d), run(tp, prompts, chain(6), d, streaming=True)
    assert output_ids(a) == output_ids(b) == vanilla(tp, prompts)
    assert summarize(a.stats) == summarize(b.stats)
    tr = np.asarray(a.draft_state.trace.exit_layer[: int(a.draft_state.rounds)])
    assert (tr == 0).any() and (tr > 0).any()  # plain rounds (the inner loop's when not streaming) and drafts
    for x, y in zip(jax.tree.leaves(a.draft_state), jax.tree.leaves(b.draft_state)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5)


def test_probe_exits_errors():
    with pytest.raises(ValueError, match="probe_exits"):
        DEL(probe_exits=-1).bind(CFG)


def test_verification_pass_with_picked_shadow_rows():
    """`rows_pick`: the picked layers' tokens and probabilities as with every row; the others −1 / 0."""
    tp = damped(2)
    toks = jnp.asarray(random_prompts(np.random.default_rng(3), [5]), jnp.int32)
    cache = init_cache(CFG, 1, 16)
    pos, mask = jnp.arange(5, dtype=jnp.int32)[None], causal_mask(cache.lengths, 5, 16)
    layers = (1, 2, 4, 5)
    lg, _, _, (tok, conf) = verification_pass(tp, toks, cache, pos, mask, CFG, (), HeadRows(layers))
    lg2, _, _, (tok2, conf2) = verification_pass(
        tp, toks, cache, pos, mask, CFG, (), HeadRows(layers), rows_pick=jnp.asarray([1, 3], jnp.int32)
    )
    np.testing.assert_allclose(lg2, lg, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(tok2[..., [1, 3]], tok[..., [1, 3]])
    np.testing.assert_allclose(conf2[..., [1, 3]], conf[..., [1, 3]], rtol=1e-5)
    assert (np.asarray(tok2[..., [0, 2]]) == -1).all() and (np.asarray(conf2[..., [0, 2]]) == 0).all()
