"""The speculative engine: prefill both models, then rounds of draft → verify → accept → cache update,
all inside one `lax.while_loop` on device, independent of the drafter (the seam: seam.py).

A row's state between rounds: `committed` = T tokens (prompt + generated); the target cache holds the
first T-1 (the newest token, `last`, is the input of the next verification); the drafter's state is
its own business (its previous token, an adaptive chain's k, its cache). One round, per row:
  draft   drafter.propose(target view, round) → a tree of D·K nodes (a chain is K = 1), as many depths
          as the drafter chose (the others invalid); a self-drafter may write the target cache at
          slots >= T-1, which verification overwrites;
  verify  one target pass over [last] + nodes at slots T-1.., positions by depth, causal (chain) or tree
          mask; logits at every node (chains of varying length: only as wide as the round's drafts,
          `verify_widths`);
  accept  greedy or lossless sampling (verify.py) → n accepted nodes on one root-to-node path + 1 extra
          token; the row emits n + 1 tokens (cut at EOS or max_new_tokens);
  update  target cache: the accepted path's K/V gathered next to the prefix (trees), length T + n;
          drafter.commit(Outcome: accepted nodes, extra token, verification logits, the hidden states
          and head rows the drafter asked for); statistics (drafted = the depths the drafter offered).
Finished rows keep computing (static shapes) but change nothing. Rounds in which a drafter would draft
nothing (`Drafter.plain_next`) run as plain decoding steps in an inner loop, at vanilla decoding's cost
(plus its head rows, in the steps it asks for them, and a commit). `draft_phase` and `verify_phase` are also
jitted apart for the timing mode (one host sync per round, drafting and verification timed apart)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxspec.cache import KVCache, init_cache
from jaxspec.config import ModelConfig
from jaxspec.decode import PAD, is_eos
from jaxspec.masks import causal_mask, tree_mask
from jaxspec.model import forward, forward_prompt
from jaxspec.sampling import GREEDY, SamplingConfig, processed_logprobs, sample
from jaxspec.sharding import ShardingPlan, constrain_cache, constrain_rows
from jaxspec.speculative.metrics import SpecStats
from jaxspec.speculative.seam import Outcome, Round, Target, drafted_depths
from jaxspec.speculative.tree import Tree, TreeShape, init_tree, path_nodes, verify_ancestors
from jaxspec.speculative.verification import narrow_pass, prompt_pass, verification_pass, verify_widths
from jaxspec.speculative.verify import accept_greedy, accept_sampling, accept_tree_greedy, accept_tree_sampling


@dataclasses.dataclass(frozen=True)
class SpecMethod:
    """How rounds draft: a chain of k tokens (`chain`), optionally adaptive, or a top-K tree (`tree`)."""

    shape: TreeShape
    adaptive: bool = False
    start: int | None = None  # adaptive chains: the first round's k (default: shape.depth // 2)
    # variable-depth chains verify the narrowest width bucket that holds the round's drafts; False: always
    # the full block (one verification shape) — the same tokens and statistics, for measuring what the
    # buckets save (experiments/speculative/verify_buckets.py)
    narrow: bool = True

    @property
    def name(self) -> str:
        return "tree" if self.shape.width > 1 else ("chain-adaptive" if self.adaptive else "chain")

    @property
    def k_start(self) -> int:
        if not self.adaptive:
            return self.shape.depth
        return self.start if self.start is not None else max(1, self.shape.depth // 2)


def chain(k: int, adaptive: bool = False, k_max: int | None = None, narrow: bool = True) -> SpecMethod:
    """k drafts per round; adaptive: start at k and move within [1, k_max] (default 2k). narrow=False
    verifies every round at the full width even when fewer tokens were drafted (`SpecMethod.narrow`)."""
    if adaptive:
        k_max = 2 * k if k_max is None else k_max
        if not 1 <= k <= k_max:
            raise ValueError(f"adaptive chain needs 1 <= k <= k_max, got k={k}, k_max={k_max}")
        return SpecMethod(TreeShape(k_max, 1), adaptive=True, start=k, narrow=narrow)
    return SpecMethod(TreeShape(k, 1), narrow=narrow)


def tree(depth: int, width: int) -> SpecMethod:
    return SpecMethod(TreeShape(depth, width))


@dataclasses.dataclass(frozen=True)
class SpecSpec:
    """Static description of one speculative generation (a static jit argument)."""

    target: ModelConfig
    drafter: Any  # a drafter (seam.py): frozen dataclass with init / propose / commit
    method: SpecMethod
    max_new_tokens: int
    max_len: int  # target cache slots per row
    draft_max_len: int
    sampling: SamplingConfig = GREEDY
    eos_ids: tuple[int, ...] = ()
    plan: ShardingPlan | None = None  # the target's

    def __post_init__(self):
        self.drafter.check_method(self.method)  # a shape the drafter does not draft: refused before tracing

    @property
    def shape(self) -> TreeShape:
        return self.method.shape


def cache_slots_needed(prompt_len: int, max_new_tokens: int, shape: TreeShape) -> int:
    """Slots a row can touch: its prompt and output plus one round's verification block past the end."""
    return prompt_len + max_new_tokens + shape.nodes + 1


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SpecState:
    target_cache: KVCache
    draft_state: Any
    tokens: jax.Array  # i32[B, N + D + 1] generated tokens (PAD after a row's end; room for one overshoot)
    last: jax.Array  # i32[B] committed token T-1 (not yet in the target cache)
    committed: jax.Array  # i32[B] T
    num: jax.Array  # i32[B] tokens generated
    done: jax.Array  # bool[B]
    stats: SpecStats
    key: jax.Array


def _laid_out(s: SpecState, spec: SpecSpec) -> SpecState:
    """The entry points' output layout (sharding.constrain_rows): the target cache per the plan, the
    engine's per-row fields per row; the draft state as its drafter laid it out."""
    if spec.plan is None:
        return s
    tokens, last, committed, num, done, stats, key = constrain_rows(
        (s.tokens, s.last, s.committed, s.num, s.done, s.stats, s.key), spec.plan
    )
    return SpecState(
        constrain_cache(s.target_cache, spec.plan), s.draft_state, tokens, last, committed, num, done, stats, key
    )


@functools.partial(jax.jit, static_argnames=("spec",))
def spec_prefill(
    target_params, draft_params, prompts: jax.Array, prompt_lens: jax.Array, key: jax.Array, *, spec: SpecSpec
) -> SpecState:
    """The target reads the padded prompts i32[B, P] and samples each row's first token; then the
    drafter prefills its own state (it sees the target's filled cache)."""
    B = prompts.shape[0]
    cache = constrain_cache(init_cache(spec.target, B, spec.max_len), spec.plan)
    rows = spec.drafter.head_rows
    if rows is not None and rows.prompt_width:  # the drafter's head rows over the prompt's end, from this pass
        logits, cache, prompt_rows = prompt_pass(target_params, prompts, prompt_lens, cache, spec.target, rows)
    else:
        (logits, cache), prompt_rows = forward_prompt(target_params, prompts, prompt_lens, cache, spec.target), None
    key, sub = jax.random.split(key)
    first = sample(sub, logits[:, 0], spec.sampling)
    draft = spec.drafter.init(
        draft_params,
        Target(target_params, cache, prompt_rows),
        prompts,
        prompt_lens,
        max_len=spec.draft_max_len,
        method=spec.method,
    )
    N, D = spec.max_new_tokens, spec.shape.depth
    tokens = jnp.full((B, N + D + 1), PAD, jnp.int32).at[:, 0].set(first)
    done = is_eos(first, spec.eos_ids) | (N <= 1)
    return _laid_out(
        SpecState(
            cache, draft, tokens, first, prompt_lens + 1, jnp.ones((B,), jnp.int32), done, SpecStats.zeros(B, D), key
        ),
        spec,
    )


def draft_round(target_params, draft_params, s: SpecState, spec: SpecSpec) -> tuple[SpecState, Tree]:
    key, sub = jax.random.split(s.key)
    dstate, t, cache = spec.drafter.propose(
        draft_params,
        s.draft_state,
        Target(target_params, s.target_cache),
        Round(s.last, s.committed, ~s.done),
        sub,
        method=spec.method,
        sampling=spec.sampling,
    )
    if not spec.drafter.writes_target_cache:  # the engine's cache, whatever came back
        cache = s.target_cache
    return dataclasses.replace(s, target_cache=cache, draft_state=dstate, key=key), t


def _accept(key, t: Tree, logits: jax.Array, spec: SpecSpec):
    """(n, path i32[B, D], extra) for the tree `t` and target logits f32[B, 1+N, V]."""
    shape, B = spec.shape, logits.shape[0]
    if shape.width == 1:  # chain: vectorised rules
        if spec.sampling.greedy:
            n, extra = accept_greedy(t.tokens, logits, t.valid)
        else:
            n, extra = accept_sampling(key, t.tokens, t.logq, processed_logprobs(logits, spec.sampling), t.valid)
        return n, jnp.broadcast_to(jnp.arange(shape.depth, dtype=jnp.int32), (B, shape.depth)), extra
    if spec.sampling.greedy:
        n, end, extra = accept_tree_greedy(t, logits, shape)
    else:
        n, end, extra = accept_tree_sampling(key, t, processed_logprobs(logits, spec.sampling), shape)
    return n, path_nodes(t, end, shape), extra


def _verify(target_params, draft_params, s: SpecState, t: Tree, spec: SpecSpec) -> SpecState:
    shape, cfg = spec.shape, spec.target
    N_nodes = shape.nodes
    S = s.target_cache.max_len
    live = ~s.done
    base = s.committed - 1  # target slots already filled
    inp = jnp.concatenate([s.last[:, None], t.tokens], axis=1)  # [B, 1+N]
    pos = base[:, None] + jnp.concatenate([jnp.zeros((1,), jnp.int32), shape.node_depths()])[None]
    mask = causal_mask(base, 1 + N_nodes, S) if shape.width == 1 else tree_mask(base, verify_ancestors(t), S)
    cache = s.target_cache.replace(lengths=base)
    rows = spec.drafter.head_rows
    rows_now = spec.drafter.head_rows_now(s.draft_state) if rows is not None else None
    widths = verify_widths(spec)
    if len(widths) == 1:
        logits, cache, hiddens, head_out = verification_pass(
            target_params, inp, cache, pos, mask, cfg, spec.drafter.hidden_layers, rows, rows_now
        )
    else:  # the narrowest block that holds every live row's drafts
        need = 1 + jnp.max(jnp.where(live, drafted_depths(t, shape), 0))
        which = jnp.sum(jnp.asarray(widths) < need)
        branches = [
            functools.partial(narrow_pass, w, cfg=cfg, hidden_layers=spec.drafter.hidden_layers, rows=rows)
            for w in widths
        ]
        logits, cache, hiddens, head_out = lax.switch(which, branches, target_params, inp, cache, pos, mask, rows_now)
    key, sub = jax.random.split(s.key)
    n, path, extra = _accept(sub, t, logits, spec)

    if shape.width > 1:  # the accepted nodes' K/V next to the prefix (slot base+1+j ← node path[j])
        cache = cache.gather(base[:, None] + 1 + path, base + 1)
    cache = constrain_cache(cache.replace(lengths=jnp.where(live, base + 1 + n, s.target_cache.lengths)), spec.plan)
    out = Outcome(t, n, path, extra, s.last, s.committed, live, drafted_depths(t, shape), logits, hiddens, *head_out)
    return advance(draft_params, dataclasses.replace(s, target_cache=cache, key=key), out, spec)


def emit(s: SpecState, out: Outcome, spec: SpecSpec) -> SpecState:
    """A round's tokens written out: the n accepted nodes along the path, then the extra token, cut at
    the first EOS and at max_new_tokens; the row's counters and statistics advanced (the target cache and
    the drafter's state as they are). A plain step is the round with n = 0."""
    t, n, path, extra, live = out.tree, out.n, out.path, out.extra, out.live
    B, D = n.shape[0], path.shape[1]
    j = jnp.arange(D + 1)[None]
    path_tok = jnp.concatenate([jnp.take_along_axis(t.tokens, path, axis=1), jnp.zeros((B, 1), jnp.int32)], 1)
    e = jnp.where(j < n[:, None], path_tok, jnp.where(j == n[:, None], extra[:, None], PAD))
    eos = is_eos(e, spec.eos_ids) & (j <= n[:, None])
    cnt = jnp.where(jnp.any(eos, 1), jnp.argmax(eos, 1) + 1, n + 1)
    cnt = jnp.minimum(cnt, spec.max_new_tokens - s.num)
    hit = jnp.any(eos & (j < cnt[:, None]), axis=1)
    e = jnp.where(j < cnt[:, None], e, PAD)
    written = jax.vmap(lambda row, x, at: lax.dynamic_update_slice(row, x, (at,)))(s.tokens, e, s.num)
    num = s.num + jnp.where(live, cnt, 0)
    return dataclasses.replace(
        s,
        tokens=jnp.where(live[:, None], written, s.tokens),
        last=jnp.where(live, extra, s.last),
        committed=s.committed + jnp.where(live, n + 1, 0),
        num=num,
        done=s.done | (live & (hit | (num >= spec.max_new_tokens))),
        stats=s.stats.update(live, n, out.drafted),
    )


def advance(draft_params, s: SpecState, out: Outcome, spec: SpecSpec) -> SpecState:
    """The round's outcome applied to everything but the target cache: emitted tokens and statistics
    (`emit`), the drafter's commit."""
    dstate = spec.drafter.commit(draft_params, s.draft_state, out, method=spec.method)
    return dataclasses.replace(emit(s, out, spec), draft_state=dstate)


def _round(target_params, draft_params, s: SpecState, spec: SpecSpec) -> SpecState:
    s, t = draft_round(target_params, draft_params, s, spec)
    return _verify(target_params, draft_params, s, t, spec)


def _plain_step(target_params, s: SpecState, spec: SpecSpec, rows_now=None) -> tuple[SpecState, Outcome]:
    """A round without drafts, as vanilla decoding's step: `last` through the target at slot T-1, the
    next token sampled from its distribution (what a round with no valid node emits), one token per live
    row. For a drafter with `head_rows`, the step's rows at those layers (those it picks:
    Drafter.head_rows_pick) also go through the LM head when `rows_now` (traced bool; None: always) — a
    cond over those rows only, not the cache. Returns the state (draft state untouched) and the step's
    outcome: a block of width 1, no drafts."""
    live, base = ~s.done, s.committed - 1
    cache = s.target_cache.replace(lengths=base)
    if spec.drafter.head_rows is not None:
        logits, cache, _, (sh, conf) = verification_pass(
            target_params,
            s.last[:, None],
            cache,
            base[:, None],
            causal_mask(base, 1, cache.max_len),
            spec.target,
            (),
            spec.drafter.head_rows,
            rows_now,
            spec.drafter.head_rows_pick(s.draft_state, method=spec.method),
        )
    else:
        (logits, cache, _), sh, conf = forward(target_params, s.last[:, None], cache, spec.target), None, None
    key, sub = jax.random.split(s.key)
    nxt = sample(sub, logits[:, 0], spec.sampling)
    cache = constrain_cache(cache.replace(lengths=jnp.where(live, base + 1, s.target_cache.lengths)), spec.plan)
    zero = jnp.zeros_like(s.num)
    B, shape = s.num.shape[0], spec.shape
    out = Outcome(
        init_tree(B, shape, None),
        zero,
        jnp.zeros((B, shape.depth), jnp.int32),
        nxt,
        s.last,
        s.committed,
        live,
        zero,
        logits,
        None,
        sh,
        conf,
    )
    return dataclasses.replace(emit(s, out, spec), target_cache=cache, key=key), out


def _plain_phase(target_params, draft_params, s: SpecState, spec: SpecSpec) -> SpecState:
    """Plain decoding steps for as long as the drafter would draft nothing (Drafter.plain_next), in a
    tight loop at vanilla decoding's cost. A step the drafter learns from (`head_rows_now`) also puts its
    head rows through the head and is committed; the others are `skip`ped — the same drafter state,
    statistics and tokens as full rounds (the streaming mode) would give."""
    d = spec.drafter

    def body(s):
        now = d.head_rows_now(s.draft_state) if d.head_rows is not None else None
        s, out = _plain_step(target_params, s, spec, now)
        commit = lambda st: d.commit(draft_params, st, out, method=spec.method)  # noqa: E731
        dstate = (
            commit(s.draft_state) if now is None else lax.cond(now, commit, lambda st: d.skip(st, 1), s.draft_state)
        )
        return dataclasses.replace(s, draft_state=dstate)

    return lax.while_loop(lambda s: d.plain_next(s.draft_state) & ~jnp.all(s.done), body, s)


def _loop_body(target_params, draft_params, s: SpecState, spec: SpecSpec) -> SpecState:
    """One full round — after the plain steps the drafter prefers (Drafter.plain_next), if any."""
    if spec.drafter.plain_next(s.draft_state) is None:
        return _round(target_params, draft_params, s, spec)
    s = _plain_phase(target_params, draft_params, s, spec)
    return lax.cond(jnp.all(s.done), lambda s: s, lambda s: _round(target_params, draft_params, s, spec), s)


@functools.partial(jax.jit, static_argnames=("spec",), donate_argnums=(2,))
def spec_loop(target_params, draft_params, state: SpecState, *, spec: SpecSpec) -> SpecState:
    """Rounds until every row is done, on device (caches donated)."""
    return _laid_out(
        lax.while_loop(lambda s: ~jnp.all(s.done), lambda s: _loop_body(target_params, draft_params, s, spec), state),
        spec,
    )


@functools.partial(jax.jit, static_argnames=("spec",), donate_argnums=(2,))
def draft_phase(target_params, draft_params, state: SpecState, *, spec: SpecSpec) -> tuple[SpecState, Tree]:
    """The drafting half of a round (timing mode)."""
    s, t = draft_round(target_params, draft_params, state, spec)
    return _laid_out(s, spec), t


@functools.partial(jax.jit, static_argnames=("spec",), donate_argnums=(2,))
def verify_phase(target_params, draft_params, state: SpecState, t: Tree, *, spec: SpecSpec) -> SpecState:
    """The verification half of a round (timing mode)."""
    return _laid_out(_verify(target_params, draft_params, state, t, spec), spec)


@functools.partial(jax.jit, static_argnames=("spec",))
def run_speculation(
    target_params, draft_params, prompts: jax.Array, prompt_lens: jax.Array, key: jax.Array, *, spec: SpecSpec
) -> SpecState:
    """The whole generation in one jitted call: prefill of both models + the on-device round loop.
    `.tokens[:, :max_new_tokens]` (PAD after each row's end), `.num`, `.stats`."""
    state = spec_prefill.__wrapped__(target_params, draft_params, prompts, prompt_lens, key, spec=spec)
    return spec_loop.__wrapped__(target_params, draft_params, state, spec=spec)
