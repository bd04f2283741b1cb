"""The draft tree: EasySpec's dynamic top-K tree, grown one depth per draft step, and its bookkeeping.

Layout (static shapes): N = D·K nodes, depth-major — node f has depth f // K + 1 — and within a depth
grouped by parent, children in rank order. The root is the last committed token (not a node). A chain
is the tree with K = 1.

Growth (`grow`): every depth-d leaf v proposes K ranked children; candidate (v, i) is scored
log π_v + log q_v^(i), where q_v^(i) is the i-th largest draft probability after v, and the global top-K
candidates become depth d+1 (a parent keeps a *prefix* of its ranks). Greedy drafting takes the top-K
tokens as the children, so the score is exactly EasySpec's π_parent · q(child). Sampled drafting
draws the children *without replacement* from q (Gumbel-top-K, in draw order); the score still uses
the sorted probabilities q_v^(i), never the drawn tokens, so how many children v keeps is independent of
v's own draws — what recursive rejection sampling needs to stay lossless (see verify.py)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from jaxspec.masks import causal_mask, tree_mask
from jaxspec.sampling import SamplingConfig, processed_logprobs


@dataclasses.dataclass(frozen=True)
class TreeShape:
    """Depth D (draft tokens on the deepest path) and width K (nodes per depth); a chain is K = 1."""

    depth: int
    width: int = 1

    def __post_init__(self):
        if self.depth < 1 or self.width < 1:
            raise ValueError(f"tree depth and width must be >= 1, got depth={self.depth}, width={self.width}")

    @property
    def nodes(self) -> int:
        return self.depth * self.width

    def node_depths(self) -> jax.Array:
        """i32[N]: the depth (1..D) of every node, i.e. its position offset from the root."""
        return jnp.arange(self.nodes, dtype=jnp.int32) // self.width + 1


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Tree:
    tokens: jax.Array  # i32[B, N]
    parent: jax.Array  # i32[B, N]  flat index of the parent node, -1 for the root
    valid: jax.Array  # bool[B, N] False for nodes beyond an adaptive chain's length or with q = 0
    ancestors: jax.Array  # bool[B, N, N]  ancestors[f, g]: g is f or an ancestor of f
    logq: jax.Array | None  # f32[B, 1 + (D-1)K, V] draft log-probs at the root and every non-leaf node
    #                         (the distributions children were drawn from; sampling only, else None)


def init_tree(B: int, shape: TreeShape, vocab: int | None) -> Tree:
    N = shape.nodes
    logq = None if vocab is None else jnp.full((B, 1 + (shape.depth - 1) * shape.width, vocab), -jnp.inf)
    return Tree(
        tokens=jnp.zeros((B, N), jnp.int32),
        parent=jnp.full((B, N), -1, jnp.int32),
        valid=jnp.zeros((B, N), bool),
        ancestors=jnp.zeros((B, N, N), bool),
        logq=logq,
    )


def ranked_children(key, logq: jax.Array, K: int, sampled: bool):
    """Each of M leaves proposes K children. logq: f32[B, M, V] (processed draft log-probs).

    Returns (tokens i32[B, M, K], their log q f32[B, M, K], score log q^(i) f32[B, M, K]): greedy takes the
    top-K; sampled draws K without replacement (Gumbel-top-K, in draw order)."""
    top_vals, top_tok = lax.top_k(logq, K)
    if not sampled:
        return top_tok.astype(jnp.int32), top_vals, top_vals
    g = jax.random.gumbel(key, logq.shape, logq.dtype)
    _, tok = lax.top_k(logq + g, K)
    return tok.astype(jnp.int32), jnp.take_along_axis(logq, tok, axis=-1), top_vals


def select_children(log_pi: jax.Array, score: jax.Array, K: int) -> jax.Array:
    """Global top-K of candidates (v, i) by log π_v + score[v, i], as a per-parent prefix of ranks.

    log_pi: f32[B, M]; score: f32[B, M, K]. Returns i32[B, K] indices v·K + i, parent-major, rank-minor."""
    B, M, _ = score.shape
    s = (log_pi[:, :, None] + score).reshape(B, M * K)
    top = lax.top_k(s, K)[1]
    chosen = jnp.zeros((B, M * K), jnp.int32).at[jnp.arange(B)[:, None], top].set(1)
    keep = chosen.reshape(B, M, K).sum(-1)  # children per parent
    include = (jnp.arange(K)[None, None, :] < keep[:, :, None]).reshape(B, M * K)  # rank prefix (ties safe)
    idx = jnp.arange(M * K)[None, :]
    return jnp.argsort(jnp.where(include, idx, idx + M * K), axis=-1)[:, :K].astype(jnp.int32)


def add_depth(tree: Tree, d: jax.Array, tokens, parent, valid, shape: TreeShape) -> Tree:
    """Write the K nodes of depth d (1-based, traced) into the tree: tokens/parent/valid i32|bool[B, K]."""
    K, N = shape.width, shape.nodes
    start = (d - 1) * K
    flat = start + jnp.arange(K)  # [K]
    own = jax.nn.one_hot(flat, N, dtype=bool)[None]  # [1, K, N]
    par_rows = jnp.take_along_axis(tree.ancestors, jnp.clip(parent, 0)[:, :, None], axis=1)  # [B, K, N]
    rows = own | (par_rows & (parent >= 0)[:, :, None])
    upd = lambda a, x: lax.dynamic_update_slice_in_dim(a, x, start, axis=1)  # noqa: E731
    return dataclasses.replace(
        tree,
        tokens=upd(tree.tokens, tokens),
        parent=upd(tree.parent, parent),
        valid=upd(tree.valid, valid),
        ancestors=upd(tree.ancestors, rows),
    )


def depth_block(x: jax.Array, d: jax.Array, K: int) -> jax.Array:
    """The K entries of depth d (traced) along axis 1 of a node-indexed array."""
    return lax.dynamic_slice_in_dim(x, (d - 1) * K, K, axis=1)


def verify_ancestors(tree: Tree) -> jax.Array:
    """bool[B, 1+N, 1+N] for the target pass over [root] + nodes: the root is everyone's ancestor."""
    B, N = tree.tokens.shape
    top = jnp.zeros((B, 1, 1 + N), bool).at[:, 0, 0].set(True)
    rest = jnp.concatenate([jnp.ones((B, N, 1), bool), tree.ancestors], axis=2)
    return jnp.concatenate([top, rest], axis=1)


def path_nodes(tree: Tree, end: jax.Array, shape: TreeShape) -> jax.Array:
    """Flat node indices of the root-to-`end` path by depth: i32[B, D] (entry j = the depth-(j+1) node;
    meaningful for j < depth(end)). end: i32[B] flat index (any value when nothing was accepted)."""
    B = end.shape[0]
    row = jnp.take_along_axis(tree.ancestors, jnp.clip(end, 0)[:, None, None], axis=1)[:, 0]  # [B, N]
    return (
        jnp.argmax(row.reshape(B, shape.depth, shape.width), axis=-1).astype(jnp.int32)
        + jnp.arange(shape.depth, dtype=jnp.int32)[None] * shape.width
    )


def chain_tree(
    tokens: jax.Array, count: jax.Array, sampling: SamplingConfig, vocab: int, logq: jax.Array | None = None
) -> Tree:
    """A chain of the first `count` of tokens i32[B, D] as a draft tree; when sampling, each node's q is
    `logq` f32[B, D, V] (a node's row: the distribution its token was drawn from), by default the point
    mass at its token (a lookup's proposal)."""
    B, D = tokens.shape
    depth = jnp.arange(D, dtype=jnp.int32)
    if sampling.greedy:
        logq = None
    elif logq is None:  # rows: the root's q (depth 1's token) and each non-leaf node's (the next one's)
        logq = jnp.where(jnp.arange(vocab)[None, None] == tokens[..., None], 0.0, -jnp.inf).astype(jnp.float32)
    return Tree(
        tokens=tokens.astype(jnp.int32),
        parent=jnp.broadcast_to(depth - 1, (B, D)),
        valid=depth[None] < count[:, None],
        ancestors=jnp.broadcast_to(depth[None, :] <= depth[:, None], (B, D, D)),
        logq=logq,
    )


def draft_logprobs(logits: jax.Array, sampling: SamplingConfig) -> jax.Array:
    """The distribution a drafter draws from: the processed one when sampling (the acceptance ratio needs
    exactly it), the plain softmax when greedy (tree scores only)."""
    if sampling.greedy:
        return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return processed_logprobs(logits, sampling)


def grow_tree(step_fn, carry, lq_root: jax.Array, key, shape: TreeShape, sampling: SamplingConfig, steps):
    """Grow a tree from the root distribution lq_root f32[B, V], one depth per call of
    `step_fn(carry, leaves i32[B, K], ancestor_rows bool[B, K, N], d) -> (carry, logq f32[B, K, V])`, which
    runs the draft on the depth-(d-1) leaves. Shared by every drafter; returns (carry, Tree)."""
    B, V = lq_root.shape
    K = shape.width
    sampled = not sampling.greedy
    tree = init_tree(B, shape, V if sampled else None)
    if sampled:
        tree = dataclasses.replace(tree, logq=tree.logq.at[:, 0].set(lq_root))
    tok, lq_tok, _ = ranked_children(jax.random.fold_in(key, 1), lq_root[:, None], K, sampled)
    tree = add_depth(tree, jnp.int32(1), tok[:, 0], jnp.full((B, K), -1, jnp.int32), jnp.isfinite(lq_tok[:, 0]), shape)

    def body(d, state):  # feeds the depth-(d-1) leaves, adds depth d
        tree, carry, log_pi = state
        leaves, anc = depth_block(tree.tokens, d - 1, K), depth_block(tree.ancestors, d - 1, K)
        carry, lq = step_fn(carry, leaves, anc, d)  # [B, K, V]
        if sampled:
            tree = dataclasses.replace(tree, logq=lax.dynamic_update_slice_in_dim(tree.logq, lq, 1 + (d - 2) * K, 1))
        tok, lq_tok, score = ranked_children(jax.random.fold_in(key, d), lq, K, sampled)
        sel = select_children(log_pi, score, K)  # [B, K] in [0, K*K)
        v = sel // K
        pick = lambda a: jnp.take_along_axis(a.reshape(B, K * K), sel, axis=1)  # noqa: E731
        lq_sel = pick(lq_tok)
        valid = jnp.take_along_axis(depth_block(tree.valid, d - 1, K), v, axis=1) & jnp.isfinite(lq_sel)
        tree = add_depth(tree, d, pick(tok), (d - 2) * K + v, valid, shape)
        return tree, carry, jnp.take_along_axis(log_pi, v, axis=1) + lq_sel

    tree, carry, _ = lax.fori_loop(2, steps + 1, body, (tree, carry, lq_tok[:, 0]))
    return carry, tree


def depth_step(forward_fn, committed: jax.Array, width: int, slots: int, sampling: SamplingConfig, constrain=None):
    """The step `grow_tree` runs at depth d, for a drafter with a KV cache: the depth-(d-1) leaves
    i32[B, K] are fed at slots committed + (d-2)K.. (each depth's K nodes after the previous depth's),
    at position committed + d - 2, each seeing the committed prefix and its own ancestors (the tree
    mask; `anc` None: a chain's causal mask). `forward_fn(tokens, cache, positions, mask) -> (logits,
    cache)` runs the draft; `constrain` lays the cache out (a sharding plan's)."""

    def step(cache, leaves, anc, d):
        c = cache.replace(lengths=committed + (d - 2) * width)
        pos = jnp.broadcast_to((committed + d - 2)[:, None], leaves.shape)
        mask = tree_mask(committed, anc, slots) if anc is not None else causal_mask(committed + d - 2, 1, slots)
        logits, c = forward_fn(leaves, c, pos, mask)
        return (c if constrain is None else constrain(c)), draft_logprobs(logits, sampling)

    return step
