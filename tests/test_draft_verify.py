"""Confidence-stopped chains (selfspec/chain.py) and the Draft & Verify self-drafter (selfspec/draft_verify.py):
the stop rule against a hand count, the threshold update against the formula, greedy output identical
to vanilla (property-based over exit, cap, starting threshold and batch), batch rows equal to single
runs, and the errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxspec import init_params, output_ids
from jaxspec.sampling import GREEDY
from jaxspec.selfspec import DraftVerify, DVState, draft_chain
from jaxspec.speculative import chain, summarize, tree
from jaxspec.speculative.seam import Outcome
from jaxspec.speculative.tree import TreeShape
from tests.helpers import examples, random_prompts
from tests.spec_helpers import TARGET
from tests.test_seam import _run
from tests.test_speculative import vanilla_rows


@pytest.mark.slow
def test_chain_stops_after_the_first_token_below_threshold():
    V, D = 5, 6
    # depth d's distribution puts probability conf[b, d-1] on token d % V
    conf = np.array(
        [
            [0.9, 0.9, 0.2, 0.9, 0.9, 0.9],  # row 0: stops after depth 3 (0.2 < 0.5, kept)
            [0.9, 0.9, 0.9, 0.9, 0.9, 0.9],  # row 1: never below: the cap (5)
            [0.1, 0.9, 0.9, 0.9, 0.9, 0.9],
        ]
    )  # row 2: the first token is below: 1 draft

    confj = jnp.asarray(conf, jnp.float32)

    def dist(d):  # f32[B, V]
        c = confj[:, d - 1]
        p = jnp.tile(((1 - c) / (V - 1))[:, None], (1, V)).at[:, d % V].set(c)
        return jnp.log(p)

    def step(carry, tok, d):  # counts the draft forwards the loop runs
        return carry + 1, dist(d)[:, None]

    n_steps, t = draft_chain(
        step, jnp.int32(0), dist(1), jax.random.key(0), TreeShape(D), GREEDY, jnp.int32(5), jnp.full((3,), 0.5)
    )
    valid = np.asarray(t.valid)
    assert valid.sum(1).tolist() == [3, 5, 1]
    assert all((v[:n] == 1).all() and (v[n:] == 0).all() for v, n in zip(valid, [3, 5, 1]))  # a prefix
    np.testing.assert_array_equal(np.asarray(t.tokens)[1, :5], [d % V for d in range(1, 6)])
    assert int(n_steps) == 4  # depths 2..5 fed once each: the loop ends at the cap


def test_threshold_update_follows_the_formula():
    dv = DraftVerify(2).bind(TARGET)
    st0 = DVState(jnp.asarray([0.6, 0.6]), jnp.asarray([jnp.nan, 0.9]), jnp.asarray([0, 10]), jnp.asarray([0, 10]))
    out = Outcome(
        None, jnp.asarray([1, 1]), None, None, None, None, jnp.asarray([True, True]), jnp.asarray([4, 4]), None, None
    )
    st1 = dv.commit(None, st0, out, method=chain(18))
    for i, (acc, dr, ar0) in enumerate([(1, 4, None), (11, 14, 0.9)]):
        accr = acc / dr
        ar = accr if ar0 is None else 0.5 * ar0 + 0.5 * accr
        new = 0.6 + 0.01 if ar < 0.8 else 0.6 - 0.01
        assert float(st1.rate[i]) == pytest.approx(ar)
        assert float(st1.threshold[i]) == pytest.approx(0.9 * 0.6 + 0.1 * new)


def target(seed):
    return init_params(jax.random.key(seed), TARGET, scale=0.15)


@pytest.mark.slow
@settings(max_examples=examples(12))
@given(
    exit_layer=st.integers(1, TARGET.num_layers - 1),
    cap=st.sampled_from([1, 4, 9]),
    start=st.sampled_from([0.0, 0.3, 0.6, 0.95]),
    batch=st.integers(1, 3),
    seed=st.integers(0, 3),
    data=st.data(),
)
def test_greedy_draft_verify_equals_vanilla(exit_layer, cap, start, batch, seed, data):
    tp = target(seed)
    lengths = data.draw(st.lists(st.integers(1, 32), min_size=batch, max_size=batch))
    prompts = random_prompts(np.random.default_rng(data.draw(st.integers(0, 2**16))), lengths)
    state = _run(tp, None, prompts, chain(cap), DraftVerify(exit_layer, start=start).bind(TARGET), eos=(7,))
    assert output_ids(state) == vanilla_rows(tp, prompts)


@pytest.mark.slow
def test_rows_equal_single_runs_and_thresholds_move():
    tp = target(1)
    prompts = random_prompts(np.random.default_rng(4), [6, 20, 13])
    dv = DraftVerify(1, start=0.3).bind(TARGET)
    batch = _run(tp, None, prompts, chain(9), dv)
    for i, p in enumerate(prompts):
        one = _run(tp, None, [p], chain(9), dv)
        assert output_ids(one) == [output_ids(batch)[i]]
        assert summarize(one.stats) == summarize(batch.stats, [i])
        assert float(one.draft_state.threshold[0]) == pytest.approx(float(batch.draft_state.threshold[i]), abs=1e-6)
    s = summarize(batch.stats)
    assert s["drafted"] < 9 * s["rounds"]  # some rounds stopped early
    assert np.all(np.asarray(batch.draft_state.threshold) != 0.3)


def test_draft_verify_errors():
    tp = target(0)
    with pytest.raises(ValueError, match="not a tree"):
        _run(tp, None, [[1, 2, 3]], tree(3, 2), DraftVerify(1).bind(TARGET))
    with pytest.raises(ValueError, match="adaptive"):
        _run(tp, None, [[1, 2, 3]], chain(2, adaptive=True), DraftVerify(1).bind(TARGET))
    with pytest.raises(ValueError, match="exit layer"):
        DraftVerify(TARGET.num_layers).bind(TARGET)
