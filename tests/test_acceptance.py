"""Chain acceptance: greedy takes the longest matching prefix plus the target's token; speculative
sampling emits tokens distributed exactly as the target's (chi-square over 60k simulated rounds with
a target that depends on the drafted prefix), including processed (top-k) distributions; the check fails
on the mutation the rule warns about (acceptance with the unprocessed draft distribution), and the bonus
token after full acceptance is drawn from p_k."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec.sampling import SamplingConfig, processed_logprobs
from jaxspec.speculative.verify import accept_greedy, accept_sampling
from tests.helpers import assert_follows, chi2_pvalue

V, K = 6, 2


def test_greedy_longest_prefix_and_extra_token():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(4, 4, 9)), jnp.float32)  # k = 3
    best = np.asarray(jnp.argmax(logits, -1))
    drafts = best[:, :3].copy()
    drafts[0, 0] = (drafts[0, 0] + 1) % 9  # rejects at 0
    drafts[1, 1] = (drafts[1, 1] + 1) % 9  # rejects at 1
    drafts[2, 2] = (drafts[2, 2] + 1) % 9  # rejects at 2
    drafts[1, 2] = (drafts[1, 2] + 1) % 9  # a later mismatch after the first rejection changes nothing
    n, extra = accept_greedy(jnp.asarray(drafts), logits)
    assert np.asarray(n).tolist() == [0, 1, 2, 3]
    assert np.asarray(extra).tolist() == [best[0, 0], best[1, 1], best[2, 2], best[3, 3]]  # row 3: bonus


def _simulate(sampling, raw_draft: bool = False):
    """60k simulated rounds of 2 drafts: (n, x1, y1, y2, p0, p1) — accepted counts, the first draft, the
    first two emitted tokens and the target's processed p0, p1[x1]. `raw_draft`: the mutation HF #47932
    shipped — acceptance with the draft's unprocessed distribution while the drafts were drawn from the
    processed one."""
    rng = np.random.default_rng(1)
    proc = lambda x: processed_logprobs(jnp.asarray(x, jnp.float32), sampling)  # noqa: E731
    raw = lambda x: processed_logprobs(jnp.asarray(x, jnp.float32), SamplingConfig(1.0))  # noqa: E731
    # target: p0, p1[x1], p2[x1, x2]; draft: q1, q2[x1] (a different model: different logits)
    P0, P1, P2 = proc(rng.normal(size=V) * 1.5), proc(rng.normal(size=(V, V)) * 1.5), proc(rng.normal(size=(V, V, V)))
    q1, q2 = rng.normal(size=V) * 1.5, rng.normal(size=(V, V)) * 1.5
    Q1, Q2 = proc(q1), proc(q2)
    A1, A2 = (raw(q1), raw(q2)) if raw_draft else (Q1, Q2)  # what acceptance is told q is

    def one_round(key):
        k1, k2, k3 = jax.random.split(key, 3)
        x1 = jax.random.categorical(k1, Q1)
        x2 = jax.random.categorical(k2, Q2[x1])
        drafts = jnp.stack([x1, x2])[None].astype(jnp.int32)
        q = jnp.stack([A1, A2[x1]])[None]
        p = jnp.stack([P0, P1[x1], P2[x1, x2]])[None]
        n, extra = accept_sampling(k3, drafts, q, p)
        y1 = jnp.where(n[0] >= 1, x1, extra[0])
        y2 = jnp.where(n[0] >= 2, x2, extra[0])  # meaningful when n >= 1
        return n[0], x1, y1, y2

    out = map(np.asarray, jax.jit(jax.vmap(one_round))(jax.random.split(jax.random.key(7), 60_000)))
    return (*out, np.exp(np.asarray(P0)), np.exp(np.asarray(P1)))


@pytest.mark.parametrize("sampling", [SamplingConfig(1.0), SamplingConfig(0.8, top_k=4)], ids=str)
def test_speculative_sampling_is_lossless(sampling):
    n, x1, y1, y2, p0, p1 = _simulate(sampling)
    assert_follows(np.bincount(y1, minlength=V), p0)  # first token ~ target p0
    checked = 0
    for a in range(V):  # second token, given the first was the accepted draft a, ~ target p1[a]
        sel = (n >= 1) & (x1 == a)
        if sel.sum() > 2000:
            assert_follows(np.bincount(y2[sel], minlength=V), p1[a])
            checked += 1
    assert checked >= 2
    assert 0 < (n == K).mean() < 1 and (n == 0).mean() > 0  # all outcomes were exercised


def test_acceptance_with_the_unprocessed_draft_distribution_fails_the_check():
    # the mutation the module warns about (HF #47932), under top-k: the same check must fail
    n, x1, y1, y2, p0, p1 = _simulate(SamplingConfig(0.8, top_k=4), raw_draft=True)
    assert chi2_pvalue(np.bincount(y1, minlength=V), p0) < 1e-6


def test_identical_draft_and_target_accept_everything():
    lp = processed_logprobs(
        jnp.asarray(np.random.default_rng(2).normal(size=(3, 3, 7)), jnp.float32), SamplingConfig(1.0)
    )
    drafts = jax.random.categorical(jax.random.key(0), lp[:, :2], axis=-1).astype(jnp.int32)
    n, extra = accept_sampling(jax.random.key(1), drafts, lp[:, :2], lp)
    assert np.asarray(n).tolist() == [2, 2, 2]
    # every draft accepted: the extra token is the bonus, drawn from p_2 (not p_0 or p_1) — over 40k keys
    draw = jax.jit(jax.vmap(lambda k: accept_sampling(k, drafts[:1], lp[:1, :2], lp[:1])))
    n, extra = map(np.asarray, draw(jax.random.split(jax.random.key(2), 40_000)))
    assert (n == 2).all()
    counts = np.bincount(extra[:, 0], minlength=7)
    assert_follows(counts, np.exp(np.asarray(lp[0, 2])))
    assert max(chi2_pvalue(counts, np.exp(np.asarray(lp[0, i]))) for i in (0, 1)) < 1e-6
