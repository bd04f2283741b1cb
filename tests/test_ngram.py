"""NGram (prompt lookup) drafting: the on-device lookup equals a plain Python reference on random
histories; greedy output equals vanilla (property-based: random tiny models, prompts with and without
repeats, batches of 1-4, every n range); sampling follows the target's exact joint; the errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxspec import output_ids
from jaxspec.sampling import SamplingConfig
from jaxspec.speculative import Model, NGram, chain, make_spec, run_speculation, speculate, tree
from jaxspec.speculative.ngram import lookup
from tests.helpers import examples
from tests.spec_helpers import TARGET, make_pair, pool_outcomes
from tests.test_speculative import MAX_BATCH, N_NEW, SLOTS, WIDTH, vanilla_rows


def reference_lookup(hist: list[int], length: int, max_n: int, min_n: int, k: int) -> list[int]:
    """Prompt lookup as a loop: the longest n first, the most recent earlier occurrence of the last n
    tokens that has a token after it; what follows it, at most k tokens, inside the history."""
    for n in range(max_n, min_n - 1, -1):
        tail = hist[length - n : length]
        for j in range(length - n - 1, -1, -1):
            if hist[j : j + n] == tail:
                return hist[j + n : min(j + n + k, length)]
    return []


@settings(max_examples=examples(300))
@given(
    data=st.data(),
    vocab=st.integers(2, 6),
    ngrams=st.sampled_from([(1, 1), (2, 1), (3, 1), (3, 2), (4, 4)]),
    k=st.sampled_from([1, 3, 6]),
)
def test_lookup_equals_a_python_reference(data, vocab, ngrams, k):
    S, B = 20, 3
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    hist = rng.integers(0, vocab, size=(B, S))  # past `length`: stale tokens the lookup must ignore
    lengths = np.array(data.draw(st.lists(st.integers(1, S), min_size=B, max_size=B)))
    toks, count = jax.jit(lookup, static_argnums=(2, 3, 4))(
        jnp.asarray(hist, jnp.int32), jnp.asarray(lengths, jnp.int32), *ngrams, k
    )
    for b in range(B):
        want = reference_lookup(hist[b].tolist(), int(lengths[b]), *ngrams, k)
        assert np.asarray(toks[b, : int(count[b])]).tolist() == want, (hist[b], lengths[b])


def _prompts(rng, lengths, repeats: bool):
    """Random prompts; with `repeats`, each built from a short random phrase repeated (lookup finds it)."""
    if not repeats:
        return [rng.integers(0, TARGET.vocab_size, size=n).tolist() for n in lengths]
    out = []
    for n in lengths:
        phrase = rng.integers(0, TARGET.vocab_size, size=int(rng.integers(2, 6))).tolist()
        out.append((phrase * (n // len(phrase) + 1))[:n])
    return out


DRAFTERS = [NGram(1, 1), NGram(3, 1), NGram(4, 2)]


@pytest.mark.slow
def test_greedy_ngram_equals_vanilla():
    """Tiny random targets (their greedy outputs fall into loops the lookup then finds), prompts with and
    without repeated phrases, batches padded to MAX_BATCH rows (one compile per drafter and k). The
    rounds' accepted lengths pooled: drafts rejected at once, partly and wholly accepted all occur."""
    hist = {"none": 0, "partial": 0, "full": 0}

    @settings(max_examples=examples(40))
    @given(
        d=st.sampled_from(range(len(DRAFTERS))),
        k=st.sampled_from([2, 5]),
        batch=st.integers(1, MAX_BATCH),
        seed=st.integers(0, 3),
        repeats=st.booleans(),
        data=st.data(),
    )
    def check(d, k, batch, seed, repeats, data):
        tp, _ = make_pair(seed, 0.3)
        lengths = data.draw(st.lists(st.integers(1, WIDTH), min_size=batch, max_size=batch))
        prompts = _prompts(np.random.default_rng(data.draw(st.integers(0, 2**16))), lengths, repeats)
        rows = prompts + [prompts[0]] * (MAX_BATCH - batch)
        spec = make_spec(
            TARGET,
            DRAFTERS[d].bind(TARGET),
            chain(k),
            prompt_len=WIDTH,
            max_new_tokens=N_NEW,
            eos_ids=(7,),
            max_len=SLOTS,
        )
        toks = np.zeros((MAX_BATCH, WIDTH), np.int32)
        for i, p in enumerate(rows):
            toks[i, : len(p)] = p
        state = run_speculation(
            tp, None, jnp.asarray(toks), jnp.asarray([len(p) for p in rows], jnp.int32), jax.random.key(0), spec=spec
        )
        assert output_ids(state)[:batch] == vanilla_rows(tp, prompts)
        pool_outcomes(hist, state.stats, batch)

    check()
    assert min(hist.values()) > 0, hist


def test_speculate_with_ngram_on_a_looping_target():
    """Through `speculate` with no draft model: on repeated-phrase prompts (and a one-token one) the
    lookup proposes, the target accepts some, the output is vanilla's; the history spans the cache."""
    tp, _ = make_pair(1, 0.3)
    prompts = _prompts(np.random.default_rng(4), [20, 9], repeats=True) + [[5]]
    out = speculate(Model(tp, TARGET), None, prompts, method=chain(4), max_new_tokens=N_NEW, drafter=NGram(3, 1))
    assert out.output_ids == vanilla_rows(tp, prompts, eos=())
    assert out.stats["drafted"] > 0 and out.stats["accepted"] > 0, out.stats
    assert out.state.draft_state.history.shape == (3, out.state.target_cache.max_len)
    # verified at the full 5-wide block every round instead of the width buckets: the same run
    full = speculate(
        Model(tp, TARGET), None, prompts, method=chain(4, narrow=False), max_new_tokens=N_NEW, drafter=NGram(3, 1)
    )
    assert full.output_ids == out.output_ids and full.stats == out.stats
    assert np.asarray(full.state.target_cache.lengths).tolist() == np.asarray(out.state.target_cache.lengths).tolist()


@pytest.mark.parametrize("sampling", [SamplingConfig(1.0), SamplingConfig(0.8, top_k=4)], ids=["t1", "t0.8-top4"])
def test_ngram_sampling_matches_the_target_joint(sampling):
    """A proposal is a point mass q: accepted with p(x), else resampled from p without x."""
    from tests.test_spec_sampling import TARGET as SMALL
    from tests.test_spec_sampling import check_sampling

    check_sampling(chain(3), sampling, NGram(2, 1).bind(SMALL))


def test_ngram_errors():
    with pytest.raises(ValueError, match="min_ngram must be an integer >= 1"):
        NGram(2, 0)
    with pytest.raises(ValueError, match=r"max_ngram \(1\) must be >= min_ngram \(2\)"):
        NGram(1, 2)
    tp, dp = make_pair(1, 0.3)
    with pytest.raises(ValueError, match="not a tree"):
        speculate(Model(tp, TARGET), None, [[1, 2, 3]], method=tree(2, 2), max_new_tokens=4, drafter=NGram())
    with pytest.raises(ValueError, match="give no draft model"):
        speculate(Model(tp, TARGET), Model(tp, TARGET), [[1, 2, 3]], method=chain(2), max_new_tokens=4, drafter=NGram())
