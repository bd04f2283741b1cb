"""Tiny model configs shared by the tests (random weights, built with transformers, no downloads)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec import forward, init_cache
from jaxspec.config import ModelConfig
from jaxspec.hlo import hlo_collectives, replica_group_size  # noqa: F401  (the tests' names for them)

VOCAB = 97


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(
        arch="qwen2",
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_layers=3,
        num_heads=8,
        num_kv_heads=2,
        head_dim=8,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        qkv_bias=True,
        tie_embeddings=False,
        max_position_embeddings=512,
    )
    base.update(kw)
    return ModelConfig(**base)


def hf_tiny(kind: str, **overrides):
    """A random tiny HF torch model: kind in llama / qwen2 / mistral, with overrides of the HF config."""
    import torch
    import transformers

    common = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
    )
    common.update(overrides)
    if kind == "llama":
        conf = transformers.LlamaConfig(**common)
        model = transformers.LlamaForCausalLM(conf)
    elif kind == "qwen2":
        conf = transformers.Qwen2Config(**common)
        model = transformers.Qwen2ForCausalLM(conf)
    elif kind == "mistral":
        conf = transformers.MistralConfig(**common)
        model = transformers.MistralForCausalLM(conf)
    else:
        raise ValueError(kind)
    torch.manual_seed(0)
    with torch.no_grad():  # larger-than-default weights so that the layers actually matter
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.08)
            else:
                p.normal_(1.0 if p.dim() == 1 and p.shape[0] == common["hidden_size"] else 0.0, 0.1)
    return model.float().eval()


def examples(n: int, floor: int = 3) -> int:
    """A property test's example budget: `n` under the "ci" hypothesis profile, scaled by the loaded
    profile's max_examples / 100 ("fast": a quarter, "explore": 4x; tests/conftest.py), never below
    `floor` (what a test's pooled coverage checks need)."""
    from hypothesis import settings

    return max(floor, round(n * settings.default.max_examples / 100))


def random_prompts(rng: np.random.Generator, lengths, vocab: int = VOCAB) -> list[list[int]]:
    return [rng.integers(0, vocab, size=int(n)).tolist() for n in lengths]


def to_jax(params):
    return jax.tree.map(jnp.asarray, params)


P_MIN = 1e-3  # a sampling test fails when its goodness-of-fit p-value is below this


def chi2_pvalue(counts, p, lump: float = 0.0) -> float:
    """Pearson χ² goodness of fit of the draws `counts` to the probabilities `p` (same shape; cells with
    p <= lump pooled into one so that every expected count is large), p-value from scipy. A draw where p
    is 0 — a token the distribution forbids — is an assertion error, not a small p-value."""
    from scipy import stats

    counts, p = np.asarray(counts, np.float64).ravel(), np.asarray(p, np.float64).ravel()
    assert counts[p == 0].sum() == 0, "a token the distribution forbids was drawn"
    big = p > lump
    obs, exp_p = counts[big], p[big]
    if (~big).any():
        obs, exp_p = np.append(obs, counts[~big].sum()), np.append(exp_p, p[~big].sum())
    keep = exp_p > 0
    expected = counts.sum() * exp_p[keep] / exp_p[keep].sum()
    chi2 = float((((obs[keep] - expected) ** 2) / expected).sum())
    return float(stats.chi2.sf(chi2, keep.sum() - 1))


def assert_follows(counts, p, lump: float = 0.0) -> None:
    """The draws follow `p`: the χ² p-value is at least P_MIN (fixed keys: deterministic)."""
    pv = chi2_pvalue(counts, p, lump)
    assert pv >= P_MIN, f"chi-square p-value {pv:.2e} < {P_MIN}: counts {np.ravel(counts)}"


@functools.partial(jax.jit, static_argnames=("cfg", "hiddens"))
def _padded_forward(params, tokens, cache, cfg, hiddens):
    return forward(params, tokens, cache, cfg, return_hiddens=hiddens)


def exact_forward(params, seq, cfg: ModelConfig, slots: int, return_hiddens: bool = False):
    """The tests' reference: one forward over the token list `seq` into an empty `slots`-slot cache.
    `seq` is zero-padded to `slots` tokens so that every length shares one compile (an eager forward
    compiles each of its ops anew for every new length: seconds per call); the mask is causal, so the
    padding cannot reach positions < len(seq). Returns numpy (logits f32[1, len(seq), V], cache, per-layer
    hiddens f32[1, len(seq), H]) — read the cache's slots below len(seq) only."""
    n = len(seq)
    assert n <= slots, (n, slots)
    tokens = np.zeros((1, slots), np.int32)
    tokens[0, :n] = seq
    logits, cache, hid = _padded_forward(params, jnp.asarray(tokens), init_cache(cfg, 1, slots), cfg, return_hiddens)
    return np.asarray(logits)[:, :n], jax.tree.map(np.asarray, cache), [np.asarray(h)[:, :n] for h in hid]
