"""Cascade (prompt lookup in front of a draft model or a self-drafter): greedy output equals vanilla
(property-based: random tiny pairs, prompts with and without repeats, batches, both modes, min_match; the
self-drafter fallbacks); a self-drafter cascade leaves the target cache as vanilla's; whenever the model drafts,
its cache is exact below the round's start — the catch-up over lookup-served rounds included (greedy
equality cannot see a stale draft cache: any draft is lossless); sampling follows the target's exact
joint in both modes; the errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxspec import output_ids
from jaxspec.sampling import SamplingConfig
from jaxspec.selfspec import DEL, FSM, DraftVerify, LayerSkip
from jaxspec.speculative import (
    Cascade,
    DraftModel,
    Model,
    NGram,
    chain,
    draft_phase,
    make_spec,
    run_speculation,
    spec_prefill,
    speculate,
    tree,
    verify_phase,
)
from jaxspec.speculative.hot_vocab import hot_vocab
from tests.helpers import exact_forward
from tests.helpers import examples as budget
from tests.spec_helpers import DRAFT, TARGET, assert_target_cache_is_vanillas, make_pair, pool_outcomes
from tests.test_ngram import _prompts
from tests.test_speculative import MAX_BATCH, N_NEW, SLOTS, WIDTH, vanilla_rows

DRAFTERS = [
    Cascade(NGram(3, 1), min_match=1),
    Cascade(NGram(2, 1), min_match=2),
    Cascade(NGram(3, 2), extend=True),
    Cascade(NGram(1, 1), min_match=1, catchup=2),
]


def _padded(prompts):
    toks = np.zeros((len(prompts), WIDTH), np.int32)
    for i, p in enumerate(prompts):
        toks[i, : len(p)] = p
    return jnp.asarray(toks), jnp.asarray([len(p) for p in prompts], jnp.int32)


def _greedy_equals_vanilla(drafters, bound_to, draft_params: bool, examples: int) -> None:
    """Property: each of `drafters` (bound to the config `bound_to`), chains of 2 and 5, batches padded to
    MAX_BATCH rows, prompts with and without repeats: vanilla's output; over the examples rejections,
    partial and whole acceptances occur, and both stages serve rounds. `draft_params`: run with the
    pair's draft model (else none: a self-drafter fallback)."""
    hist = {"none": 0, "partial": 0, "full": 0}
    served = {"ngram": 0, "model": 0}

    @settings(max_examples=budget(examples))
    @given(
        d=st.sampled_from(range(len(drafters))),
        k=st.sampled_from([2, 5]),
        batch=st.integers(1, MAX_BATCH),
        seed=st.integers(0, 3),
        repeats=st.booleans(),
        data=st.data(),
    )
    def check(d, k, batch, seed, repeats, data):
        tp, dp = make_pair(seed, 0.3)
        lengths = data.draw(st.lists(st.integers(1, WIDTH), min_size=batch, max_size=batch))
        prompts = _prompts(np.random.default_rng(data.draw(st.integers(0, 2**16))), lengths, repeats)
        rows = prompts + [prompts[0]] * (MAX_BATCH - batch)
        spec = make_spec(
            TARGET,
            drafters[d].bind(bound_to),
            chain(k),
            prompt_len=WIDTH,
            max_new_tokens=N_NEW,
            eos_ids=(7,),
            max_len=SLOTS,
        )
        state = run_speculation(tp, dp if draft_params else None, *_padded(rows), jax.random.key(0), spec=spec)
        assert output_ids(state)[:batch] == vanilla_rows(tp, prompts)
        pool_outcomes(hist, state.stats, batch)
        served["ngram"] += int(state.draft_state.ngram_rounds[:batch].sum())
        served["model"] += int(state.draft_state.model_rounds[:batch].sum())

    check()
    assert min(hist.values()) > 0 and min(served.values()) > 0, (hist, served)


@pytest.mark.slow
def test_greedy_cascade_equals_vanilla():
    """Both modes and a narrow catch-up; the pair agrees partly (lam 0.3)."""
    _greedy_equals_vanilla(DRAFTERS, DRAFT, True, 40)


def _draft_kv(dp, tokens: list[int]):
    """The draft model's K/V of `tokens` from one exact forward: per layer f32[Hkv, T, K]."""
    return [k[0, :, : len(tokens)] for k in exact_forward(dp, tokens, DRAFT, SLOTS)[1].k]


@pytest.mark.slow
@pytest.mark.parametrize(
    "drafter",
    [
        Cascade(NGram(2, 1), min_match=1),
        Cascade(NGram(2, 1), min_match=1, catchup=1),
        Cascade(NGram(2, 1), extend=True),
    ],
    ids=["switch", "switch-catchup1", "extend"],
)
def test_the_draft_cache_is_exact_whenever_the_model_drafts(drafter):
    """Round by round: after `propose` in a round where the model drafted, every live row's draft cache
    equals an exact forward over its T committed tokens at slots [0, T) — however many lookup-served
    rounds came before (switch: the catch-up fed them; extend: the block did)."""
    tp, dp = make_pair(2, 0.3)
    prompts = _prompts(np.random.default_rng(7), [20, 13, 6], repeats=True)
    spec = make_spec(TARGET, drafter.bind(DRAFT), chain(4), prompt_len=WIDTH, max_new_tokens=N_NEW, max_len=SLOTS)
    state = spec_prefill(tp, dp, *_padded(prompts), jax.random.key(0), spec=spec)
    checked = lagged = 0
    while not bool(state.done.all()):
        fed_before = np.asarray(state.draft_state.fed)
        committed, live = np.asarray(state.committed), ~np.asarray(state.done)
        history = np.asarray(state.draft_state.ngram.history)
        last = np.asarray(state.last)
        state, t = draft_phase(tp, dp, state, spec=spec)
        ds = state.draft_state
        if bool(ds.model_ran):
            for b in np.flatnonzero(live):
                T = int(committed[b])
                toks = history[b, : T - 1].tolist() + [int(last[b])]
                want = _draft_kv(dp, toks)
                got = [np.asarray(k[b, :, :T]) for k in ds.model.cache.k]
                for g, w in zip(got, want):
                    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
                checked += 1
                lagged += int(fed_before[b] < T - 2)
        state = verify_phase(tp, dp, state, t, spec=spec)
    assert output_ids(state) == vanilla_rows(tp, prompts, eos=())
    ds = state.draft_state
    assert checked > 0 and int(ds.ngram_rounds.sum()) > 0, (checked, ds.ngram_rounds)
    if not drafter.extend:  # the model drafted after lookup-served rounds: the catch-up ran
        assert lagged > 0 and int(ds.catchup_passes) > 0, (lagged, ds.catchup_passes)


def test_speculate_with_a_cascade_and_a_hot_vocabulary_model():
    """Through `speculate` with an unbound cascade whose model drafts from a 40-token hot vocabulary:
    vanilla's output, both stages serve rounds, the report adds up."""
    tp, dp = make_pair(1, 0.3)
    prompts = _prompts(np.random.default_rng(4), [20, 9], repeats=True) + [[5, 9, 2]]
    vocab = hot_vocab({i: TARGET.vocab_size - i for i in range(TARGET.vocab_size)}, 40, TARGET.vocab_size, "test")
    out = speculate(
        Model(tp, TARGET),
        Model(dp, DRAFT),
        prompts,
        method=chain(4),
        max_new_tokens=N_NEW,
        drafter=Cascade(NGram(3, 1), DraftModel(vocab=vocab), min_match=2),
    )
    assert out.output_ids == vanilla_rows(tp, prompts, eos=())
    ds = out.state.draft_state
    report = Cascade().report(jax.device_get(ds))["cascade"]
    assert report["ngram_rounds"] > 0 and report["model_rounds"] > 0, report
    assert report["ngram_rounds"] + report["model_rounds"] == out.stats["rounds"], (report, out.stats)
    assert "hot_head" in Cascade(fallback=DraftModel(vocab=vocab)).bind(DRAFT).prepare(dp)


@pytest.mark.parametrize(
    "drafter,sampling",
    [
        (Cascade(NGram(2, 1), min_match=1), SamplingConfig(1.0)),
        (Cascade(NGram(2, 1), extend=True), SamplingConfig(0.8, top_k=4)),
    ],
    ids=["switch-t1", "extend-t0.8-top4"],
)
@pytest.mark.slow
def test_cascade_sampling_matches_the_target_joint(drafter, sampling):
    """Lookup nodes carry a point-mass q, model nodes the model's q given the actual prefix (extend: after
    the lookup's tokens): the first three tokens follow the target's exact joint."""
    from tests.test_spec_sampling import DRAFT as SMALL_DRAFT
    from tests.test_spec_sampling import check_sampling

    check_sampling(chain(3), sampling, drafter.bind(SMALL_DRAFT))


SELF_FALLBACKS = [
    Cascade(NGram(3, 1), LayerSkip(1), min_match=1),
    Cascade(NGram(2, 1), LayerSkip(2), min_match=2),
    Cascade(NGram(2, 1), FSM(1, start=2), min_match=1),
    Cascade(NGram(3, 1), DraftVerify(2), min_match=1),
]


@pytest.mark.slow
def test_greedy_cascade_with_a_self_drafter_equals_vanilla():
    """The lookup in front of the target's own first layers (LayerSkip, FSM, DraftVerify): no draft model,
    the fallback drafts in the target's cache."""
    _greedy_equals_vanilla(SELF_FALLBACKS, TARGET, False, 20)


def test_a_self_drafter_cascade_leaves_the_target_cache_as_vanilla():
    """Through `speculate` with no draft model: the one cache after the run equals vanilla decoding's
    (the fallback's shallow K/V written in model rounds were overwritten by verification)."""
    tp, _ = make_pair(2, 0.3)
    prompts = _prompts(np.random.default_rng(7), [20, 13, 6], repeats=True)
    out = speculate(
        Model(tp, TARGET),
        None,
        prompts,
        method=chain(4),
        max_new_tokens=N_NEW,
        drafter=Cascade(NGram(2, 1), FSM(2, start=3), min_match=1),
    )
    assert out.output_ids == vanilla_rows(tp, prompts, eos=())
    ds = out.state.draft_state
    assert int(ds.ngram_rounds.sum()) > 0 and int(ds.model_rounds.sum()) > 0, (ds.ngram_rounds, ds.model_rounds)
    assert_target_cache_is_vanillas(
        out.state.target_cache, tp, TARGET, prompts, out.output_ids, out.state.target_cache.max_len
    )


def test_a_self_drafter_adapts_only_to_the_rounds_it_drafted():
    """Cascade.commit hands FSM an outcome in which the rows the lookup served are not live: their γ stays;
    the row the model served moves (+1: its whole draft accepted); in a round where the model did not run
    at all no γ moves."""
    from jaxspec.speculative.cascade import CascadeState
    from jaxspec.speculative.ngram import NGramState
    from jaxspec.speculative.seam import Outcome
    from jaxspec.speculative.tree import chain_tree

    cas = Cascade(NGram(2, 1), FSM(1, start=2), min_match=1).bind(TARGET)
    B, D = 3, 4
    z = jnp.zeros((B,), jnp.int32)
    tree = chain_tree(jnp.ones((B, D), jnp.int32), jnp.full((B,), D, jnp.int32), SamplingConfig(0.0), TARGET.vocab_size)
    out = Outcome(
        tree,
        n=jnp.full((B,), D, jnp.int32),
        path=jnp.broadcast_to(jnp.arange(D), (B, D)),
        extra=z,
        last=z,
        committed=jnp.full((B,), 5, jnp.int32),
        live=jnp.ones((B,), bool),
        drafted=jnp.full((B,), D, jnp.int32),
        logits=None,
        hiddens=None,
    )

    def gamma_after(took, ran):
        st = CascadeState(
            NGramState(jnp.zeros((B, 32), jnp.int32)),
            jnp.full((B,), 2, jnp.int32),
            z,
            jnp.asarray(took),
            jnp.bool_(ran),
            z,
            z,
            z,
            jnp.int32(0),
            jnp.int32(0),
        )
        return np.asarray(cas.commit(None, st, out, method=chain(D)).model).tolist()

    assert gamma_after([True, False, True], True) == [2, 3, 2]
    assert gamma_after([True, True, True], False) == [2, 2, 2]


@pytest.mark.slow
def test_self_drafter_cascade_sampling_matches_the_target_joint():
    from tests.test_spec_sampling import TARGET as SMALL_TARGET
    from tests.test_spec_sampling import check_sampling

    check_sampling(chain(3), SamplingConfig(1.0), Cascade(NGram(2, 1), LayerSkip(1), min_match=1).bind(SMALL_TARGET))


def test_cascade_errors():
    with pytest.raises(ValueError, match="min_match must be an integer >= 1"):
        Cascade(min_match=0)
    with pytest.raises(ValueError, match="first stage is an NGram"):
        Cascade(DraftModel())
    with pytest.raises(ValueError, match="fallback is a draft model .* or a self-drafter"):
        Cascade(fallback=NGram())
    with pytest.raises(ValueError, match="DEL behind the lookup is not supported"):
        Cascade(fallback=DEL())
    with pytest.raises(ValueError, match="extend mode .* needs a draft model"):
        Cascade(fallback=LayerSkip(1), extend=True)
    with pytest.raises(ValueError, match="catchup must be >= 0"):
        Cascade(catchup=-1)
    tp, dp = make_pair(1, 0.3)
    t, d = Model(tp, TARGET), Model(dp, DRAFT)
    with pytest.raises(ValueError, match="not a tree or an adaptive chain"):
        speculate(t, d, [[1, 2, 3]], method=tree(2, 2), max_new_tokens=4, drafter=Cascade())
    with pytest.raises(ValueError, match=r"min_match \(3\) exceeds the chain's k \(2\)"):
        speculate(t, d, [[1, 2, 3]], method=chain(2), max_new_tokens=4, drafter=Cascade(min_match=3))
    with pytest.raises(ValueError, match="falls back on a draft model"):
        speculate(t, None, [[1, 2, 3]], method=chain(3), max_new_tokens=4, drafter=Cascade())
    with pytest.raises(ValueError, match="drafts with the target's own layers: give no draft model"):
        speculate(t, d, [[1, 2, 3]], method=chain(3), max_new_tokens=4, drafter=Cascade(fallback=LayerSkip(1)))
    with pytest.raises(ValueError, match=r"exit layer 3 is outside 1\.\.2"):
        speculate(t, None, [[1, 2, 3]], method=chain(3), max_new_tokens=4, drafter=Cascade(fallback=LayerSkip(3)))
