"""Sampling: the processed distribution (temperature, top-k, top-p) against a numpy reference, and
draws from `sample` distributed as that distribution (chi-square on 40k draws, fixed keys, p-value >=
1e-3), and the check's power: a 10 % change of temperature fails it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec.sampling import SamplingConfig, processed_logprobs, sample
from tests.helpers import assert_follows, chi2_pvalue

LOGITS = np.array([2.0, 1.5, 1.4, 0.3, -0.2, -1.0, 0.9, 0.0, -3.0, 1.0], np.float32)


def reference_probs(logits: np.ndarray, cfg: SamplingConfig) -> np.ndarray:
    x = logits.astype(np.float64) / (cfg.temperature or 1.0)
    keep = np.ones_like(x, bool)
    if cfg.top_k:
        keep &= x >= np.sort(x)[::-1][cfg.top_k - 1]
    p = np.where(keep, np.exp(x - x.max()), 0.0)
    p /= p.sum()
    if cfg.top_p < 1:
        order = np.argsort(-p, kind="stable")
        before = np.cumsum(p[order]) - p[order]
        drop = order[before >= cfg.top_p]
        p[drop] = 0.0
        p /= p.sum()
    return p


CONFIGS = [
    SamplingConfig(1.0),
    SamplingConfig(0.7),
    SamplingConfig(1.3, top_k=4),
    SamplingConfig(1.0, top_p=0.8),
    SamplingConfig(0.8, top_k=5, top_p=0.6),
    SamplingConfig(1.0, top_k=1),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_processed_distribution_matches_reference(cfg):
    ours = np.exp(np.asarray(processed_logprobs(jnp.asarray(LOGITS)[None], cfg))[0])
    np.testing.assert_allclose(ours, reference_probs(LOGITS, cfg), atol=1e-6)


@pytest.mark.parametrize("cfg", CONFIGS[:5], ids=str)
def test_samples_follow_the_processed_distribution(cfg):
    n = 40_000
    keys = jax.random.split(jax.random.key(123), n)
    draws = jax.jit(jax.vmap(lambda k: sample(k, jnp.asarray(LOGITS)[None], cfg)[0]))(keys)
    counts = np.bincount(np.asarray(draws), minlength=LOGITS.size)
    assert_follows(counts, reference_probs(LOGITS, cfg))  # and never a token outside top-k / top-p


def test_the_check_rejects_a_near_miss():
    # the same check on draws at temperature 1/0.9 against temperature 1 must fail: at this sample size it
    # tells apart distributions that close
    keys = jax.random.split(jax.random.key(123), 40_000)
    draws = jax.jit(jax.vmap(lambda k: sample(k, jnp.asarray(LOGITS * 0.9)[None], SamplingConfig(1.0))[0]))(keys)
    counts = np.bincount(np.asarray(draws), minlength=LOGITS.size)
    p = reference_probs(LOGITS, SamplingConfig(1.0))
    assert chi2_pvalue(counts, p) < 1e-6  # temperature 1/0.9 instead of 1: detected


def test_greedy_is_argmax_and_configs_are_validated():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(4, 50)), jnp.float32)
    np.testing.assert_array_equal(sample(jax.random.key(0), logits, SamplingConfig()), np.argmax(logits, -1))
    for bad in (dict(temperature=-1.0), dict(top_k=-2), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(ValueError):
            SamplingConfig(**bad)
