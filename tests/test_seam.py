"""The drafter seam (jaxspec/speculative/seam.py) with drafters that need no draft model:

  * an oracle self-drafter — the target itself, all layers, drafting in the target's own KV cache —
    must have every draft accepted every round, and the hidden states handed to `commit` must be the
    verification's (the final layer's, through the head, are its logits);
  * a random drafter accepts almost nothing and still equals vanilla;
  * a drafter that writes garbage into the target cache at slots >= committed - 1 (the invariant's
    limit) changes nothing: outputs equal vanilla and the target cache equals a vanilla pass's.
Also `speculate(target, None, drafter=...)`, the outcome's drafted count, and the adaptive k living in
the drafter."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec import forward, output_ids
from jaxspec.cache import KVCache
from jaxspec.config import ModelConfig
from jaxspec.layers import write_kv
from jaxspec.model import head
from jaxspec.speculative import DraftModel, Model, chain, make_spec, run_speculation, speculate, summarize, tree
from jaxspec.speculative.seam import Drafter, HeadRows, Outcome, Round, Target
from jaxspec.speculative.tree import depth_step, draft_logprobs, grow_tree
from tests.helpers import exact_forward, random_prompts
from tests.spec_helpers import DRAFT, TARGET, assert_target_cache_is_vanillas, make_pair
from tests.test_speculative import N_NEW, SLOTS, WIDTH, vanilla_rows


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _Seen:
    hiddens: jax.Array  # the last outcome's hidden states and logits, for the test to compare
    logits: jax.Array


@dataclasses.dataclass(frozen=True)
class TargetOracle(Drafter):
    """Drafts with the whole target in the target's cache: its proposals are the target's greedy tokens."""

    cfg: ModelConfig
    writes_target_cache = True

    @property
    def hidden_layers(self) -> tuple[int, ...]:
        return (1, self.cfg.num_layers)

    def init(self, params, target, prompts, prompt_lens, *, max_len, method):
        B, N, V, D = prompts.shape[0], method.shape.nodes, self.cfg.vocab_size, self.cfg.hidden_size
        return _Seen(jnp.zeros((B, 1 + N, 2, D)), jnp.zeros((B, 1 + N, V)))

    def propose(self, params, st, target: Target, rnd: Round, key, *, method, sampling):
        shape, T = method.shape, rnd.committed
        S, K = target.cache.max_len, shape.width
        logits, cache, _ = forward(target.params, rnd.last[:, None], target.cache.replace(lengths=T - 1), self.cfg)

        step = depth_step(
            lambda t, c, pos, mask: forward(target.params, t, c, self.cfg, positions=pos, mask=mask)[:2],
            T,
            K,
            S,
            sampling,
        )  # as DraftModel's
        cache, t = grow_tree(step, cache, draft_logprobs(logits[:, 0], sampling), key, shape, sampling, shape.depth)
        return st, t, cache.replace(lengths=T - 1)  # it wrote the slots from T - 1 on

    def commit(self, params, st, out: Outcome, *, method):
        return dataclasses.replace(st, hiddens=out.hiddens, logits=out.logits)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _FirstShadow:
    rounds: jax.Array
    tokens: jax.Array  # the first round's shadow tokens and probabilities
    conf: jax.Array


@dataclasses.dataclass(frozen=True)
class ShadowOracle(TargetOracle):
    """TargetOracle asking for shadow tokens after layers 1 and 2; keeps the first round's."""

    head_rows = HeadRows((1, 2))

    def init(self, params, target, prompts, prompt_lens, *, max_len, method):
        B, N = prompts.shape[0], method.shape.nodes
        return _FirstShadow(jnp.int32(0), jnp.zeros((B, 1 + N, 2), jnp.int32), jnp.zeros((B, 1 + N, 2)))

    def commit(self, params, st, out: Outcome, *, method):
        first = st.rounds == 0
        return _FirstShadow(
            st.rounds + 1, jnp.where(first, out.head_tokens, st.tokens), jnp.where(first, out.head_conf, st.conf)
        )


@dataclasses.dataclass(frozen=True)
class RandomDrafter(Drafter):
    """Proposes tokens drawn from a fresh random distribution at every node; no model at all."""

    cfg: ModelConfig

    def init(self, params, target, prompts, prompt_lens, *, max_len, method):
        return jnp.zeros((), jnp.int32)

    def propose(self, params, st, target, rnd, key, *, method, sampling):
        B, V = rnd.last.shape[0], self.cfg.vocab_size

        def step(i, leaves, anc, d):
            return i, draft_logprobs(
                jax.random.normal(jax.random.fold_in(key, 100 + d), leaves.shape + (V,)) * 3, sampling
            )

        root = draft_logprobs(jax.random.normal(jax.random.fold_in(key, 99), (B, V)) * 3, sampling)
        _, t = grow_tree(step, st, root, key, method.shape, sampling, method.shape.depth)
        return st + 1, t, target.cache

    def commit(self, params, st, out, *, method):
        return st


@dataclasses.dataclass(frozen=True)
class GarbageWriter(Drafter):
    """DraftModel, plus large random K/V written into every target layer at slots [T-1, T-1 + span)."""

    inner: DraftModel
    span: int
    writes_target_cache = True

    @property
    def cfg(self):
        return self.inner.cfg

    def init(self, params, target, prompts, prompt_lens, *, max_len, method):
        return self.inner.init(params, target, prompts, prompt_lens, max_len=max_len, method=method)

    def propose(self, params, st, target: Target, rnd: Round, key, *, method, sampling):
        st, t, _ = self.inner.propose(params, st, target, rnd, key, method=method, sampling=sampling)
        c: KVCache = target.cache
        at = rnd.committed - 1
        junk = lambda x, i: write_kv(  # noqa: E731
            x,
            50.0
            * jax.random.normal(
                jax.random.fold_in(key, i),
                (  # noqa: E731
                    x.shape[0],
                    self.span,
                    x.shape[1],
                    x.shape[3],
                ),
            ),
            at,
        )
        c = c.replace(
            k=tuple(junk(x, i) for i, x in enumerate(c.k)), v=tuple(junk(x, 1000 + i) for i, x in enumerate(c.v))
        )
        return st, t, c

    def commit(self, params, st, out, *, method):
        return self.inner.commit(params, st, out, method=method)


def _run(tp, dp, prompts, method, drafter, eos=()):
    spec = make_spec(TARGET, drafter, method, prompt_len=WIDTH, max_new_tokens=N_NEW, eos_ids=eos, max_len=SLOTS)
    toks = np.zeros((len(prompts), WIDTH), np.int32)
    for i, p in enumerate(prompts):
        toks[i, : len(p)] = p
    return run_speculation(
        tp, dp, jnp.asarray(toks), jnp.asarray([len(p) for p in prompts], jnp.int32), jax.random.key(0), spec=spec
    )


PROMPTS = random_prompts(np.random.default_rng(11), [5, 23, 14])


@pytest.mark.parametrize("method", [chain(4), chain(7)], ids=["chain4", "chain7"])
def test_oracle_self_drafter_accepts_every_draft(method):
    """Chains: a tree keeps its global top-K by path probability, which may drop the greedy path."""
    tp, _ = make_pair(1, 0.3)
    state = _run(tp, None, PROMPTS, method, TargetOracle(TARGET))
    assert output_ids(state) == vanilla_rows(tp, PROMPTS, eos=())
    s = summarize(state.stats)
    assert s["accepted"] == s["drafted"] > 0 and s["acceptance_rate"] == 1.0  # every draft, every round
    seen = state.draft_state
    assert seen.hiddens.shape == (len(PROMPTS), 1 + method.shape.nodes, 2, TARGET.hidden_size)
    np.testing.assert_allclose(
        np.asarray(head(tp, seen.hiddens[:, :, 1], TARGET)), np.asarray(seen.logits), atol=1e-4
    )  # the final layer's hidden states are the verification's


def test_speculate_without_a_draft_model():
    tp, _ = make_pair(1, 0.3)
    target = Model(tp, TARGET)
    out = speculate(target, None, PROMPTS, method=chain(3), max_new_tokens=N_NEW, drafter=TargetOracle(TARGET))
    assert out.output_ids == vanilla_rows(tp, PROMPTS, eos=())
    assert out.stats["acceptance_rate"] == 1.0
    with pytest.raises(ValueError, match="draft model or a drafter"):
        speculate(target, None, PROMPTS, method=chain(3))


@pytest.mark.parametrize("method", [chain(4), tree(3, 3)], ids=["chain4", "tree3x3"])
def test_random_drafter_accepts_almost_nothing_and_equals_vanilla(method):
    tp, _ = make_pair(2, 0.3)
    state = _run(tp, None, PROMPTS, method, RandomDrafter(TARGET))
    assert output_ids(state) == vanilla_rows(tp, PROMPTS, eos=())
    s = summarize(state.stats)
    assert s["drafted"] > 0 and s["acceptance_rate"] < 0.15, s  # chance is ~1/97 per token


@pytest.mark.parametrize("method", [chain(4), tree(3, 2)], ids=["chain4", "tree3x2"])
def test_target_cache_writes_above_the_committed_prefix_change_nothing(method):
    """The invariant: writes at slots >= committed - 1 are overwritten by verification or cut by rollback."""
    tp, dp = make_pair(3, 0.3)
    drafter = GarbageWriter(DraftModel(DRAFT), span=method.shape.nodes + 1)
    state = _run(tp, dp, PROMPTS, method, drafter)
    outs = output_ids(state)
    assert outs == vanilla_rows(tp, PROMPTS, eos=())
    ref_state = _run(tp, dp, PROMPTS, method, DraftModel(DRAFT))
    for a, b in zip(jax.tree.leaves(state.stats), jax.tree.leaves(ref_state.stats)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert_target_cache_is_vanillas(state.target_cache, tp, TARGET, PROMPTS, outs, SLOTS)


def test_drafted_counts_come_from_the_tree_and_adaptive_k_lives_in_the_drafter():
    tp, dp = make_pair(4, 0.3)
    method = chain(2, adaptive=True, k_max=6)
    state = _run(tp, dp, PROMPTS, method, DraftModel(DRAFT))
    assert output_ids(state) == vanilla_rows(tp, PROMPTS, eos=())
    s = summarize(state.stats)
    assert s["drafted"] < s["rounds"] * 6  # adaptive rounds drafted fewer than k_max
    assert 1 <= int(state.draft_state.k) <= 6


def test_shadow_tokens_equal_a_teacher_forced_reference():
    """The first round verifies [first token] + D drafts that are the target's own greedy tokens, i.e. the
    output's first D + 1 tokens: a full forward over prompt + those tokens, with the head applied after
    layers 1 and 2, must give the same shadow tokens and probabilities at their positions."""
    tp, _ = make_pair(1, 0.3)
    D = 4
    state = _run(tp, None, PROMPTS, chain(D), ShadowOracle(TARGET))
    outs = output_ids(state)
    assert outs == vanilla_rows(tp, PROMPTS, eos=())
    for i, (p, out) in enumerate(zip(PROMPTS, outs)):
        _, _, hid = exact_forward(tp, p + out[: D + 1], TARGET, SLOTS, return_hiddens=True)
        for j, layer in enumerate((1, 2)):
            lg = head(tp, hid[layer - 1][:, len(p) : len(p) + D + 1], TARGET)[0]  # the block: positions P..P+D
            np.testing.assert_array_equal(np.asarray(state.draft_state.tokens[i, :, j]), np.asarray(lg.argmax(-1)))
            np.testing.assert_allclose(
                np.asarray(state.draft_state.conf[i, :, j]), np.asarray(jax.nn.softmax(lg, -1).max(-1)), atol=1e-5
            )
