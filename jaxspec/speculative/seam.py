"""The drafter seam: what the engine tells a drafter, and what a drafter may touch.

A drafter is a frozen (hashable, static) dataclass. The engine never knows which one it runs; it calls

  prepare(params) -> params
      once, on the host: the param tree the three functions below receive (EasySpec: stacked group
      weights; a self-drafter, which reads the target's params, gets None); the engine's callers call
      prepare_for(draft params, target params), which is prepare(draft params) unless a drafter needs
      the target's too (a self-drafter's hot-vocabulary head: the kept rows of the target's head);
  cache_slots(slots, shape) -> int
      slots of its own cache next to the target's `slots` (EasySpec: room for a calibration block);
  init(params, target: Target, prompts, prompt_lens, *, max_len, method) -> state
      after the target's prefill (`target.cache` holds the prompts): prefill its own state;
  propose(params, state, target: Target, rnd: Round, key, *, method, sampling) -> (state, Tree, target cache)
      grow a tree of `method.shape` — as many depths as it likes (adaptive chains, confidence stops):
      nodes it did not draft stay invalid. Returns the target cache, changed only by a drafter that
      `writes_target_cache`;
  commit(params, state, out: Outcome, *, method) -> state
      the round's outcome: accepted nodes, emitted extra token, the verification's logits and, for a
      drafter that asks for them (`hidden_layers`), its hidden states;
  report(state) -> dict
      on the host after a run: the drafter's own account of it (DEL: exit and τ per round);
  plain_next(state) -> bool[] or None, skip(state, rounds) -> state
      whether it would draft nothing next round: the loop then runs a plain decoding step instead
      (committed to the drafter when it asks for head rows that step, else `skip`ped) — Drafter.plain_next;
  head_rows_now(state) -> bool[] or None, head_rows_pick(state, method) -> i32[k] or None
      for a drafter with `head_rows`: whether this round's verification computes them, and which of them.

Static declarations (class attributes of `Drafter`, overridden per drafter):
  hidden_layers: tuple[int, ...]   residual stream after these layer counts (1..L) over the verified
                                   block, handed to `commit` as Outcome.hiddens; () costs nothing;
  head_rows: HeadRows | None       extra rows for the LM head: the residual stream after each of
                                   `head_rows.layers` goes through the final norm + head in one call
                                   with the verification's own rows (the head's weights read once); their
                                   greedy tokens and probabilities reach `commit` (Outcome.head_tokens /
                                   head_conf) and, over the prompt's last `prompt_width` positions, `init`
                                   (Target.prompt_rows, from the prefill's own hidden states). DEL's
                                   "shadow tokens" (what each candidate exit would have predicted) are these;
  writes_target_cache: bool        the drafter writes K/V into the target's cache (a self-drafter's
                                   shallow layers ARE the target's);
  needs_draft_model: bool          it drafts with a separate model's params (`prepare` gets them);
                                   False: it has none (a self-drafter reads the target's, NGram the
                                   token history) and `speculate(target, None, ...)` runs it;
  variable_depth: bool             a chain whose drafted depth varies between rounds (confidence stops,
                                   DEL's plain steps): verification then runs the narrowest block that
                                   holds the round's drafts (verification.verify_widths);
  shapes: frozenset[str]           the shapes it drafts: "chain", "adaptive" (an adaptive chain), "tree";
                                   `check_method` refuses any other before anything is compiled or measured
                                   (SpecSpec checks it; `shapes_why` says why, in the error).

Host-side steps, each with a default (no probing for optional members):
  bind(cfg, mesh, plan) -> drafter     resolve an unbound configuration for the model it drafts with (the
                                       draft model's, or the target's for a self-drafter); `bound` says
                                       whether that is done; the default drafter needs nothing bound;
  check_head(target_params)            a drafter reading the target's LM head says here if it is missing;
  calibrate(target_params, *, max_len, depth, measure) -> drafter
                                       a drafter with costs to measure on the target's params (DEL's
                                       measured cost model) reads them from the disk cache here (logged),
                                       and times them only when `measure` (speculate / make_runner's
                                       measure_costs: an explicit request, never a side effect).

The invariant a target-cache writer keeps: it writes only slots >= committed - 1 (the slot of `last` and
beyond). Verification runs every layer over [last] + drafts from slot committed - 1 and overwrites those
slots, and rollback is lowering `lengths`, so after a round the target cache equals vanilla decoding's
whatever the drafter wrote there (tests/test_seam.py checks it with a drafter that writes garbage)."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import jax
import jax.numpy as jnp

from jaxspec.cache import KVCache
from jaxspec.speculative.tree import Tree, TreeShape


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Target:
    """The target as a drafter sees it: its params and its one KV cache (slots [0, committed - 1) hold
    the committed prefix; `lengths` = committed - 1 during a round)."""

    params: Any
    cache: KVCache
    prompt_rows: Any = None  # init only, for a drafter whose head_rows have a prompt_width: PromptRows


@dataclasses.dataclass(frozen=True)
class HeadRows:
    """A drafter's extra rows for the LM head (static: part of the jitted program). The residual stream
    after each of `layers` (layer counts 1..L-1) goes through the final norm and the LM head together with
    the final layer's rows, in the verification pass (and a plain step's) and, over the prompt's last
    `prompt_width` positions, in the prefill: what an exit after that layer would predict, at the price
    of head rows only. `vocab` (a HotVocab): those rows' tokens and probabilities over its kept tokens
    only (what a trimmed head would give); the final rows stay full."""

    layers: tuple[int, ...]
    vocab: Any = None
    prompt_width: int = 0


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PromptRows:
    """The head rows over a prompt's last W positions (slots `cols`), computed by the target's prefill
    from the hidden states it has anyway: what each row's layer and the full model predict next."""

    cols: jax.Array  # i32[B, W] prompt positions (the last W; from 0 for shorter prompts)
    real: jax.Array  # bool[B, W] inside the prompt
    greedy: jax.Array  # i32[B, W] the full model's greedy next token there (the last real one: token 1's)
    tokens: jax.Array  # i32[B, W, m] each head row's greedy token
    conf: jax.Array  # f32[B, W, m] its softmax probability


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Round:
    """A round's starting point, per row: T = `committed` tokens, the newest (`last`) not yet in the
    target cache; rows that are not `live` (finished) compute but change nothing."""

    last: jax.Array  # i32[B]
    committed: jax.Array  # i32[B]
    live: jax.Array  # bool[B]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Outcome:
    """A round's result: `n` accepted nodes along `path` of `tree`, then the `extra` token (correction or
    bonus); the row now holds committed + n + 1 tokens (when live)."""

    tree: Tree
    n: jax.Array  # i32[B]
    path: jax.Array  # i32[B, D] the accepted path's node per depth (meaningful below n)
    extra: jax.Array  # i32[B]
    last: jax.Array  # i32[B] the round's root (committed token T-1)
    committed: jax.Array  # i32[B] T before the round
    live: jax.Array  # bool[B]
    drafted: jax.Array  # i32[B] depths drafted (nodes a chain offered; a tree's deepest valid depth)
    logits: jax.Array | None  # f32[B, 1 + N, V] the verification's logits at [last] + nodes (None: oracle)
    hiddens: jax.Array | None  # f32[B, 1 + N, len(hidden_layers), D], or None when none were asked for
    head_tokens: jax.Array | None = None  # i32[B, 1 + N, len(head_rows.layers)] a head row's greedy token
    head_conf: jax.Array | None = None  # f32[B, 1 + N, len(head_rows.layers)] its softmax probability

    @property
    def emitted_prev(self) -> jax.Array:
        """The committed token before `extra` afterwards: the last accepted node, or `last`."""
        path_tok = jnp.take_along_axis(self.tree.tokens, self.path, axis=1)
        prev = jnp.take_along_axis(path_tok, jnp.maximum(self.n - 1, 0)[:, None], axis=1)[:, 0]
        return jnp.where(self.n > 0, prev, self.last)


ALL_SHAPES = frozenset({"chain", "adaptive", "tree"})
CHAIN_ONLY = frozenset({"chain"})


def shape_name(method) -> str:
    """ "chain", "adaptive" or "tree": the kind of shape `method` (a SpecMethod) is."""
    return "tree" if method.shape.width > 1 else "adaptive" if method.adaptive else "chain"


class Drafter:
    """The seam, every member declared with its default; a drafter overrides what it needs (see the
    module docstring) and must implement `init`, `propose` and `commit`. A public member whose name is
    one letter or two off a member of the seam (`comit`, `propse`) is refused when the class is made: it
    would silently leave the default in place."""

    shapes: frozenset = ALL_SHAPES
    shapes_why: str = "drafts one chain per round: use chain(k)"  # check_method's error for a chain-only drafter
    hidden_layers: tuple[int, ...] = ()
    head_rows: HeadRows | None = None
    vocab = None  # a HotVocab: the draft head keeps only its tokens (hot_vocab.py); None: the full head
    writes_target_cache: bool = False
    needs_draft_model: bool = True
    variable_depth: bool = False  # drafts fewer depths in some rounds (the engine then verifies narrower)

    @property
    def bound(self) -> bool:
        """Whether `bind` has resolved it (a drafter with nothing to bind always is)."""
        return True

    def bind(self, cfg, mesh=None, plan=None) -> "Drafter":
        del cfg, mesh, plan
        return self

    def check_method(self, method) -> None:
        """Raise ValueError when `method`'s shape is not one this drafter drafts (`shapes`)."""
        kind = shape_name(method)
        if kind in self.shapes:
            return
        if self.shapes == CHAIN_ONLY:
            raise ValueError(f"{type(self).__name__} {self.shapes_why}, not a tree or an adaptive chain")
        raise ValueError(f"{type(self).__name__} drafts {' or '.join(sorted(self.shapes))}, not {kind}")

    def check_head(self, target_params) -> None:
        del target_params

    def draft_costs(self, params, shape: TreeShape, *, context: int, max_len: int, repeats: int = 5) -> dict | None:
        """Seconds of the forwards its drafting is made of, timed on its prepared params (a self-drafter:
        the target's) — for the analytic speedup (speculative/costs.py); None (the default): a draft
        model's forwards, timed there."""
        del params, shape, context, max_len, repeats
        return None

    def calibrate(self, target_params, *, max_len: int = 512, depth: int = 18, measure: bool = True) -> "Drafter":
        """Costs it prices rounds with, on `target_params` (DEL's measured cost model): read from the disk
        cache (logged) or, with `measure`, timed on this machine (an explicit request: speculate and
        make_runner pass measure_costs, False by default). The default has none."""
        del target_params, max_len, depth, measure
        return self

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        seam = {n for n in vars(Drafter) if not n.startswith("_")}
        for name in vars(cls):
            if name.startswith("_") or name in seam:
                continue
            near = difflib.get_close_matches(name, seam, n=1, cutoff=0.85)
            if near:
                raise TypeError(
                    f"{cls.__name__}.{name} is not a member of the drafter seam: did you mean "
                    f"{near[0]!r}? (jaxspec/speculative/seam.py)"
                )

    def init(self, params, target: Target, prompts: jax.Array, prompt_lens: jax.Array, *, max_len: int, method):
        """After the target's prefill: the drafter's state (its own cache, counters)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement init")

    def propose(self, params, state, target: Target, rnd: Round, key, *, method, sampling):
        """(state, Tree of method.shape, target cache): this round's drafts."""
        raise NotImplementedError(f"{type(self).__name__} does not implement propose")

    def commit(self, params, state, out: Outcome, *, method):
        """The state after the round's outcome."""
        raise NotImplementedError(f"{type(self).__name__} does not implement commit")

    def prepare(self, params):
        return params

    def prepare_for(self, params, target_params):
        """`prepare` given the target's params too — what the engine's callers call (speculate, the
        runners). A drafter that takes something from the target's weights overrides it."""
        del target_params
        return self.prepare(params)

    def cache_slots(self, slots: int, shape: TreeShape) -> int:
        del shape
        return slots

    def head_rows_now(self, state) -> jax.Array | None:
        """Traced bool, read after `propose`: whether this round's verification computes the `head_rows`
        (a drafter may skip rounds: their outputs are then tokens −1, probabilities 0); None (the
        default): every round."""
        del state
        return None

    def describe(self) -> dict:
        """On the host: its settings (JSON-able; the bench JSON keeps them; {}: none)."""
        return {}

    def report(self, state) -> dict:
        """On the host after a run: what the drafter has to say about it (JSON-able; {}: nothing)."""
        del state
        return {}

    def plain_next(self, state) -> jax.Array | None:
        """Traced bool[]: the drafter would draft nothing in the next round (e.g. DEL while its rule
        prefers plain decoding). The on-device loop then runs plain decoding steps in a tight inner loop
        for as long as this holds — vanilla decoding's step, no padded verification block, no conditional
        over the cache. A step whose head rows the drafter asks for (`head_rows_now`; always, for a drafter
        without head rows) is handed to `commit` as an Outcome of width 1 (n = 0, no drafts, logits
        f32[B, 1, V]); the others are counted with `skip`. None (the default): every round is a full round.
        The streaming mode runs full rounds throughout: the outputs and the drafter's state are the same."""
        del state
        return None

    def head_rows_pick(self, state, *, method) -> jax.Array | None:
        """Traced i32[k]: in a plain step (`plain_next`) that computes head rows, the indices of the
        `head_rows.layers` whose rows go through the head (the others' come back as tokens −1); None (the
        default): all of them. A drafter that uses it must ignore the unpicked layers in `commit` —
        the streaming mode's full rounds compute every row."""
        del state, method
        return None

    def skip(self, state, rounds: jax.Array):
        """The state after `rounds` (traced i32[]) plain steps the engine ran in its place."""
        del rounds
        return state


def drafted_depths(tree: Tree, shape: TreeShape) -> jax.Array:
    """i32[B]: the deepest depth with a valid node (a chain: its drafted length; at most D of a tree's
    nodes can be accepted in a round, so a tree counts its depth, as vLLM does)."""
    B = tree.valid.shape[0]
    any_valid = jnp.any(tree.valid.reshape(B, shape.depth, shape.width), axis=2)  # [B, D]
    return jnp.max(jnp.where(any_valid, jnp.arange(1, shape.depth + 1, dtype=jnp.int32)[None], 0), axis=1)


def adaptive_steps(method, k: jax.Array) -> jax.Array:
    """The depths to draft this round: an adaptive chain's current k, else the method's depth."""
    return k if method.adaptive else jnp.int32(method.shape.depth)


def next_k(method, k: jax.Array, out: Outcome) -> jax.Array:
    """HF's heuristic for adaptive chains, for the batch: +2 when every live row accepted its whole
    draft, else -1, within [1, k_max]. Other methods keep k."""
    if not method.adaptive:
        return k
    all_in = jnp.all(~out.live | (out.n >= out.drafted))
    return jnp.clip(jnp.where(all_in, k + 2, k - 1), 1, method.shape.depth).astype(jnp.int32)
