"""Hot-vocabulary heads on the self-drafters (LayerSkip, FS, Draft & Verify, DEL; FR-Spec / VocabTrim):
the head cut once from the target's own (`prepare_for`), drafts only from the kept tokens, greedy output
equal to vanilla (property-based: random subsets, exits, caps, batches, DEL's own and forced exits),
DEL's shadow tokens — the prompt's seeding and every verification's — restricted to the subset and equal
to what the trimmed exit drafts, sampling with q renormalised over the subset following the target's
exact joint, through `speculate` and behind a cascade's lookup, the round cost timed with the trimmed
head under its own cache key, and the errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxspec import init_cache, output_ids
from jaxspec.masks import causal_mask
from jaxspec.sampling import SamplingConfig
from jaxspec.selfspec import DEL, FSM, DraftVerify, LayerSkip
from jaxspec.selfspec.layerskip import shallow_logits
from jaxspec.selfspec.round_cost import cost_key, measure_round_cost
from jaxspec.speculative import Cascade, HotVocab, Model, NGram, chain, make_spec, run_speculation, speculate
from jaxspec.speculative.engine import draft_phase, spec_prefill
from jaxspec.speculative.hot_vocab import trim_head
from jaxspec.speculative.seam import HeadRows
from jaxspec.speculative.verification import verification_pass
from jaxspec.timing import best_times
from tests.helpers import examples, random_prompts
from tests.spec_helpers import pool_outcomes
from tests.test_del import CFG, N_NEW, SLOTS, WIDTH, CyclingDEL, damped, vanilla

V = CFG.vocab_size


def subset(ids, vocab: int = V) -> HotVocab:
    return HotVocab(np.sort(np.asarray(ids, np.int32)), vocab)


def _spec(drafter, method, prompts, eos=()):
    d = drafter.bind(CFG)
    spec = make_spec(CFG, d, method, prompt_len=WIDTH, max_new_tokens=N_NEW, eos_ids=eos, max_len=SLOTS)
    toks = np.zeros((len(prompts), WIDTH), np.int32)
    for i, p in enumerate(prompts):
        toks[i, : len(p)] = p
    return d, spec, jnp.asarray(toks), jnp.asarray([len(p) for p in prompts], jnp.int32)


def run(tp, prompts, method, drafter, eos=()):
    d, spec, toks, lens = _spec(drafter, method, prompts, eos)
    return run_speculation(tp, d.prepare_for(None, tp), toks, lens, jax.random.key(0), spec=spec)


def test_shadow_tokens_are_what_the_trimmed_exit_would_draft():
    """verification_pass with the drafter's hot vocabulary: each exit's shadow token and probability are
    the argmax and max softmax probability of that exit through the trimmed head (LayerSkip's draft);
    without it, the shadow tokens leave the subset."""
    tp = damped(0)
    rng = np.random.default_rng(0)
    keep = subset(rng.choice(V, V // 3, replace=False))
    B, T, S, exits = 2, 6, 16, (1, 3, 5)
    toks = jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32)
    pos = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32)[None], (B, T))
    mask = causal_mask(jnp.zeros((B,), jnp.int32), T, S)
    _, _, _, (sh, conf) = verification_pass(tp, toks, init_cache(CFG, B, S), pos, mask, CFG, (), HeadRows(exits, keep))
    _, _, _, (full, _) = verification_pass(tp, toks, init_cache(CFG, B, S), pos, mask, CFG, (), HeadRows(exits))
    hot = trim_head(tp, CFG, keep)
    for j, e in enumerate(exits):
        lg, _, _ = shallow_logits(hot, toks, init_cache(CFG, B, S), pos, mask, e, CFG)
        np.testing.assert_array_equal(np.asarray(sh[..., j]), np.argmax(np.asarray(lg), -1))
        np.testing.assert_allclose(
            np.asarray(conf[..., j]), np.max(np.asarray(jax.nn.softmax(lg, -1)), -1), rtol=1e-5, atol=1e-6
        )
    assert np.isin(np.asarray(sh), keep.ids).all()
    assert not np.isin(np.asarray(full), keep.ids).all()


def test_drafts_come_from_the_kept_tokens_only():
    """Three kept tokens: LayerSkip's and DEL's drafts (DEL faithful: it always drafts) hold only them."""
    tp = damped(2)
    keep = subset([1, 5, 9])
    prompts = random_prompts(np.random.default_rng(0), [5, 17, 30])
    for drafter in (LayerSkip(3, vocab=keep), DEL(exits=(2, 4), faithful=True, vocab=keep)):
        d, spec, toks, lens = _spec(drafter, chain(4), prompts)
        dp = d.prepare_for(None, tp)
        assert set(dp) == {"hot_head"} and dp["hot_head"]["w"].shape == (3, CFG.hidden_size)
        state = spec_prefill(tp, dp, toks, lens, jax.random.key(0), spec=spec)
        _, t = draft_phase(tp, dp, state, spec=spec)
        drafted = np.asarray(t.tokens)[np.asarray(t.valid)]
        assert drafted.size > 0 and np.isin(drafted, keep.ids).all(), (type(drafter).__name__, drafted)


@pytest.mark.slow
def test_greedy_self_drafters_with_a_hot_vocabulary_equal_vanilla():
    """Random kept subsets (2 tokens to all) on random damped targets, every self-drafter, chains of 1–6,
    batches of 1–3: output identical to vanilla; pooled, rounds rejected at once and accepted occur."""
    hist = {"none": 0, "partial": 0, "full": 0}

    @settings(max_examples=examples(16))
    @given(
        seed=st.integers(0, 3),
        kind=st.sampled_from(["ls", "fs", "dv", "del", "del-faithful", "del-cycling"]),
        keep=st.integers(2, V),
        exit_layer=st.integers(1, 5),
        cap=st.sampled_from([1, 3, 6]),
        batch=st.integers(1, 3),
        data=st.data(),
    )
    def check(seed, kind, keep, exit_layer, cap, batch, data):
        damp = data.draw(st.lists(st.sampled_from([1.0, 0.5, 0.2, 0.05]), min_size=6, max_size=6))
        tp = damped(seed, damp)
        rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
        vocab = subset(rng.choice(V, keep, replace=False))
        prompts = random_prompts(rng, data.draw(st.lists(st.integers(1, 30), min_size=batch, max_size=batch)))
        drafter = {
            "ls": lambda: LayerSkip(exit_layer, vocab=vocab),
            "fs": lambda: FSM(exit_layer, vocab=vocab),
            "dv": lambda: DraftVerify(exit_layer, vocab=vocab),
            "del": lambda: DEL(cost="layers", vocab=vocab),
            "del-faithful": lambda: DEL(exits=(1, 3, 5), faithful=True, vocab=vocab),
            "del-cycling": lambda: CyclingDEL(exits=(1, 3, 5), vocab=vocab),
        }[kind]()
        state = run(tp, prompts, chain(cap), drafter, eos=(7,))
        assert output_ids(state) == vanilla(tp, prompts, eos=(7,)), kind
        pool_outcomes(hist, state.stats, batch)

    check()
    assert hist["none"] > 0 and hist["partial"] + hist["full"] > 0, hist


SEEN: list = []


@dataclasses.dataclass(frozen=True)
class WatchedDEL(CyclingDEL):
    """CyclingDEL that hands the host every shadow token it is given: the prompt's seeding and each
    verification's (engine.spec_prefill / _verify pass the drafter's shadow vocabulary)."""

    def init(self, params, target, prompts, prompt_lens, *, max_len, method):
        jax.debug.callback(lambda s: SEEN.append(("prompt", np.asarray(s))), target.prompt_rows.tokens)
        return super().init(params, target, prompts, prompt_lens, max_len=max_len, method=method)

    def commit(self, params, st, out, *, method):
        jax.debug.callback(lambda s: SEEN.append(("round", np.asarray(s))), out.head_tokens)
        return super().commit(params, st, out, method=method)


@pytest.mark.slow
def test_the_engine_restricts_del_shadow_tokens_to_the_hot_vocabulary():
    tp = damped(3)
    keep = subset(np.arange(0, V, 4))
    prompts = random_prompts(np.random.default_rng(5), [9, 20])
    for vocab in (keep, None):
        SEEN.clear()
        state = run(tp, prompts, chain(4), WatchedDEL(exits=(1, 3, 5), context=4, vocab=vocab))
        jax.effects_barrier()
        assert output_ids(state) == vanilla(tp, prompts)
        kinds = {k for k, _ in SEEN}
        assert kinds == {"prompt", "round"}, kinds
        seen = np.concatenate([s.ravel() for _, s in SEEN])
        seen = seen[seen >= 0]  # −1: a padded column or an unpicked exit
        assert seen.size > 0
        assert np.isin(seen, keep.ids).all() == (vocab is not None)


@pytest.mark.parametrize("kind", ["ls", "del"])
def test_self_drafters_hot_vocabulary_sampling_matches_the_target_joint(kind):
    """q renormalised over 5 of 8 tokens, 0 outside: the first three tokens follow the target's joint."""
    from tests.test_spec_sampling import TARGET as SMALL
    from tests.test_spec_sampling import V as V8
    from tests.test_spec_sampling import check_sampling

    keep = HotVocab(np.array([0, 2, 3, 5, 6], np.int32), V8)
    drafter = LayerSkip(1, vocab=keep) if kind == "ls" else DEL(faithful=True, vocab=keep)
    check_sampling(chain(3), SamplingConfig(1.0), drafter.bind(SMALL))


@pytest.mark.slow
def test_speculate_cascade_round_cost_and_errors():
    """Through `speculate` (bound to the target there) alone and behind a cascade's lookup: vanilla's
    output. The round cost times the trimmed draft and is kept under a key of its own (keys without a
    hot vocabulary are unchanged). A vocabulary of another size is refused at bind."""
    tp = damped(1, (1, 1, 0.5, 0.5, 0.2, 0.2))
    prompts = random_prompts(np.random.default_rng(7), [12, 4, 25])
    prompts[1] = prompts[1] * 4  # a repeat: the lookup has something to find
    v = subset(np.arange(0, V, 2))
    want = vanilla(tp, prompts)
    for drafter in (LayerSkip(3, vocab=v), Cascade(NGram(3, 1), LayerSkip(3, vocab=v), min_match=1)):
        out = speculate(Model(tp, CFG), None, prompts, method=chain(3), max_new_tokens=N_NEW, drafter=drafter)
        assert out.output_ids == want, type(drafter).__name__
        assert out.stats["drafted"] > 0
    base = cost_key(tp, CFG, (1, 3), depth=4, max_len=64, dispatch="segments")
    assert "draft_vocab" not in base
    assert cost_key(tp, CFG, (1, 3), depth=4, max_len=64, dispatch="segments", vocab=v) == {
        **base,
        "draft_vocab": v.digest,
    }
    from jaxspec.selfspec import round_cost

    timed = {}

    def spy(calls, repeats):  # the timer as it is, noting what each timed draft forward computes
        for key, (fn, *args) in calls.items():
            if isinstance(key, tuple):
                timed[key] = np.asarray(fn(*args))
        return best_times(calls, repeats)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(round_cost, "best_times", spy)
        cost = measure_round_cost(tp, CFG, (1, 3), depth=2, max_len=32, repeats=1, vocab=v)
    assert len(cost.verify) == 3 and len(cost.draft) == len(cost.exits)
    assert sorted(timed) == [("draft", 0), ("draft", 1)]
    for i in range(2):  # the draft timed is the trimmed head's: finite logits on the kept tokens only
        assert np.flatnonzero(np.isfinite(timed["draft", i][0, -1])).tolist() == v.ids.tolist(), i
    for drafter in (
        LayerSkip(2, vocab=HotVocab(np.arange(3, dtype=np.int32), 7)),
        DEL(cost="layers", vocab=HotVocab(np.arange(3, dtype=np.int32), 7)),
    ):
        with pytest.raises(ValueError, match=f"made for 7 tokens, the target has {V}"):
            drafter.bind(CFG)
