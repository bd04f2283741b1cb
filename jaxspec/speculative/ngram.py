"""`NGram`: prompt lookup decoding — a drafter with no model (Saxena 2023; HF's
`prompt_lookup_num_tokens`, vLLM's `ngram` method).

    speculate(target, None, prompts, method=chain(4), drafter=NGram(max_ngram=3, min_ngram=1))

Each row keeps its token history (prompt, then output) in the drafter state, on device. A round looks up
the history's last n tokens, n from `max_ngram` down to `min_ngram`, in the rest of the history and
proposes the (at most k) tokens that followed their most recent earlier occurrence; the first n with a
match decides. A row with no match proposes nothing (the engine then verifies [last] alone, a plain
step: `variable_depth`). No draft model, no draft prefill, no draft memory beyond the history.

Lossless: greedy acceptance is the engine's; when sampling, a proposal is a draw from a point mass
(q = 1 at the proposed token), so the sampling rule accepts it with probability p(x) and resamples from
p without x on rejection — the target's distribution exactly (verify.py).

The lookup is O(B · S · Σn) compares over the S-slot history per round (S = the cache's slots): at
S = 512 and n ≤ 4, ~10^4 per row, nothing beside one forward of a model."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from jaxspec.config import ModelConfig
from jaxspec.sampling import SamplingConfig
from jaxspec.speculative.seam import CHAIN_ONLY, Drafter, Outcome, Round, Target
from jaxspec.speculative.tree import chain_tree


def lookup(history: jax.Array, length: jax.Array, max_ngram: int, min_ngram: int, k: int):
    """Prompt lookup over history i32[B, S] (tokens valid below length i32[B]): for n = max_ngram down
    to min_ngram, the most recent start j with history[j : j + n] == the last n tokens and j + n < length
    (an earlier occurrence, with at least one token after it); the first n that has one decides.
    Returns (tokens i32[B, k] = history[j + n : j + n + k], count i32[B]: how many of them are real, 0
    where nothing matched)."""
    B, S = history.shape
    j = jnp.arange(S, dtype=jnp.int32)[None]  # [1, S]
    found = jnp.zeros((B,), bool)
    start = jnp.zeros((B,), jnp.int32)
    for n in range(max_ngram, min_ngram - 1, -1):
        tail = jnp.take_along_axis(history, jnp.clip(length[:, None] - n + jnp.arange(n), 0, S - 1), axis=1)
        match = j + n < length[:, None]  # [B, S] an earlier occurrence, a token after it
        for i in range(n):  # window j's i-th token (−1 past the end: no token id matches it)
            shifted = jnp.pad(history[:, i:], ((0, 0), (0, i)), constant_values=-1)
            match &= shifted == tail[:, i : i + 1]
        last = jnp.max(jnp.where(match, j, -1), axis=1)  # the most recent occurrence
        take = (last >= 0) & ~found
        start = jnp.where(take, last + n, start)
        found |= last >= 0
    pos = start[:, None] + jnp.arange(k, dtype=jnp.int32)
    tokens = jnp.take_along_axis(history, jnp.clip(pos, 0, S - 1), axis=1)
    count = jnp.where(found, jnp.minimum(k, length - start), 0).astype(jnp.int32)
    return tokens, count


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NGramState:
    history: jax.Array  # i32[B, S] prompt then output; at a round's start valid below `committed`


@dataclasses.dataclass(frozen=True)
class NGram(Drafter):
    """Prompt lookup: n-grams of `max_ngram` down to `min_ngram` tokens; the chain's depth (`chain(k)`)
    caps a proposal. `cfg` (the target's: its vocabulary) is bound by `speculate` / `make_runner`."""

    max_ngram: int = 3
    min_ngram: int = 2  # the registry's default (jaxspec/methods.py: 1-grams lose where text does not repeat)
    cfg: ModelConfig | None = dataclasses.field(default=None, kw_only=True)
    variable_depth = True
    needs_draft_model = False
    shapes = CHAIN_ONLY
    shapes_why = "proposes one continuation per round (it already stops where its match ends): use chain(k)"

    def __post_init__(self):
        if not (isinstance(self.min_ngram, int) and isinstance(self.max_ngram, int)) or self.min_ngram < 1:
            raise ValueError(f"min_ngram must be an integer >= 1, got {self.min_ngram!r}")
        if self.max_ngram < self.min_ngram:
            raise ValueError(f"max_ngram ({self.max_ngram}) must be >= min_ngram ({self.min_ngram})")

    @property
    def bound(self) -> bool:
        return self.cfg is not None

    def bind(self, cfg: ModelConfig, mesh=None, plan=None) -> "NGram":
        del mesh, plan
        return dataclasses.replace(self, cfg=cfg)

    def prepare(self, params):
        if params is not None:
            raise ValueError("NGram drafts from the token history: give no draft model (draft=None)")
        return None

    def describe(self) -> dict:
        return {"max_ngram": self.max_ngram, "min_ngram": self.min_ngram}

    def init(self, params, target: Target, prompts, prompt_lens, *, max_len: int, method) -> NGramState:
        del params, target, prompt_lens
        B, P = prompts.shape
        history = lax.dynamic_update_slice(
            jnp.zeros((B, max_len), jnp.int32), prompts[:, :max_len].astype(jnp.int32), (0, 0)
        )
        return NGramState(history)

    def propose(self, params, st: NGramState, target: Target, rnd: Round, key, *, method, sampling: SamplingConfig):
        del params, key
        B = rnd.committed.shape[0]
        rows = jnp.arange(B)
        history = st.history.at[rows, rnd.committed - 1].set(rnd.last, mode="drop")  # the newest token
        tokens, count = lookup(history, rnd.committed, self.max_ngram, self.min_ngram, method.shape.depth)
        return NGramState(history), chain_tree(tokens, count, sampling, self.cfg.vocab_size), target.cache

    def commit(self, params, st: NGramState, out: Outcome, *, method) -> NGramState:
        """The accepted drafts join the history (the extra token joins as next round's `last`)."""
        del params
        D = method.shape.depth
        toks = jnp.take_along_axis(out.tree.tokens, out.path, axis=1)  # [B, D]
        keep = (jnp.arange(D)[None] < out.n[:, None]) & out.live[:, None]
        S = st.history.shape[1]
        pos = jnp.where(keep, out.committed[:, None] + jnp.arange(D), S)  # S: dropped
        rows = jnp.arange(toks.shape[0])[:, None]
        return NGramState(st.history.at[rows, pos].set(toks, mode="drop"))
