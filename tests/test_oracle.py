"""Oracle verification (greedy acceptance against the known continuation) reproduces real speculation:
the same outputs, statistics and draft caches as the engine, for chains, adaptive chains and trees,
with the separate draft model and with EasySpec."""

import functools

import jax
import numpy as np
import pytest

from jaxspec import DecodeSpec, generate, output_ids
from jaxspec.easyspec import EasySpec
from jaxspec.sampling import SamplingConfig
from jaxspec.speculative import DraftModel, chain, make_spec, run_speculation, tree
from jaxspec.speculative.oracle import continuation_buffer, oracle_speculation
from tests.helpers import random_prompts, tiny_cfg
from tests.spec_helpers import make_pair

TARGET, DRAFT = tiny_cfg(num_layers=6), tiny_cfg(num_layers=5)
N_NEW, WIDTH, SLOTS = 24, 32, 128


PROMPTS = random_prompts(np.random.default_rng(11), [3, 30, 14, 22])


@functools.lru_cache(maxsize=1)
def _continuation():
    """The target's greedy continuation of PROMPTS, N + 6 tokens without stop tokens: plain decoding
    (`generate`), independent of the speculative engine whose output it checks."""
    tp, _ = make_pair(5, 0.3, TARGET, DRAFT)
    toks, lens = _padded()
    state = jax.jit(generate, static_argnames=("spec",))(
        tp, toks, lens, jax.random.key(0), spec=DecodeSpec(TARGET, N_NEW + 6, SLOTS)
    )
    return output_ids(state)


def _padded():
    toks = np.zeros((len(PROMPTS), WIDTH), np.int32)
    for i, p in enumerate(PROMPTS):
        toks[i, : len(p)] = p
    return toks, np.asarray([len(p) for p in PROMPTS], np.int32)


@pytest.mark.parametrize(
    "method,drafter",
    [
        (chain(3), DraftModel(DRAFT)),
        (chain(2, adaptive=True, k_max=5), DraftModel(DRAFT)),
        (tree(3, 2), DraftModel(DRAFT)),
        (chain(4), EasySpec(parallel=3, calibration="every_mismatch").bind(DRAFT)),
        (tree(4, 3), EasySpec(parallel=2, policy="direct_mlp").bind(DRAFT)),
    ],
    ids=["chain3", "adaptive", "tree3x2", "easyspec-chain4", "easyspec-tree4x3"],
)
@pytest.mark.slow
def test_oracle_equals_the_engine(method, drafter):
    tp, dp = make_pair(5, 0.3, TARGET, DRAFT)
    dp = drafter.prepare(dp)
    toks, lens = _padded()
    spec = make_spec(TARGET, drafter, method, prompt_len=WIDTH, max_new_tokens=N_NEW, eos_ids=(7,), max_len=SLOTS)
    real = run_speculation(tp, dp, toks, lens, jax.random.key(0), spec=spec)
    cont = continuation_buffer(_continuation(), N_NEW, method.shape.depth)
    oracle = oracle_speculation(dp, toks, lens, cont, spec=spec)
    assert output_ids(oracle) == output_ids(real)
    want = [ref[:N_NEW][: ref[:N_NEW].index(7) + 1] if 7 in ref[:N_NEW] else ref[:N_NEW] for ref in _continuation()]
    assert output_ids(real) == want  # vanilla's tokens, up to EOS (7) or N_NEW
    assert 0 < int(real.stats.accepted.sum()) < int(real.stats.drafted.sum())  # both outcomes occur
    for a, b in zip(jax.tree.leaves(oracle.stats), jax.tree.leaves(real.stats)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(oracle.committed), np.asarray(real.committed))
    for a, b in zip(
        oracle.draft_state.cache.k + oracle.draft_state.cache.v, real.draft_state.cache.k + real.draft_state.cache.v
    ):
        for i, n in enumerate(np.asarray(real.committed) - 2):  # every committed token's draft K/V, to the bit
            np.testing.assert_array_equal(np.asarray(a[i, :, :n]), np.asarray(b[i, :, :n]))


def test_oracle_errors():
    with pytest.raises(ValueError, match=r"must be 8 tokens .*; rows \[1\] are shorter"):
        continuation_buffer([[1] * 9, [1] * 7], 4, 3)

    spec = make_spec(TARGET, DraftModel(DRAFT), chain(2), prompt_len=4, max_new_tokens=4, sampling=SamplingConfig(1.0))
    with pytest.raises(ValueError, match="exact for greedy decoding only"):
        oracle_speculation(
            {}, np.zeros((1, 4), np.int32), np.ones((1,), np.int32), np.zeros((1, 7), np.int32), spec=spec
        )
