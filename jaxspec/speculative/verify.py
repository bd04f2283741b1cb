"""Acceptance rules of speculative decoding (lossless), for a batch of rows: chains and trees.

A round drafts k tokens x_1..x_k per row; one target pass scores the prefix plus the k drafts and gives
k + 1 next-token distributions p_0..p_k (p_i is the target's distribution for position i, after the
i-th draft token). Each rule returns, per row, how many drafts are accepted (n in [0, k]) and the one
extra token the round emits (the correction at position n, or the bonus from p_k when all are accepted),
so a round always emits n + 1 tokens.

  * greedy: accept while x_i == argmax p_{i-1}; the extra token is argmax p_n. Output is identical to
    vanilla greedy decoding by construction.
  * sampling (Leviathan et al. / Chen et al.): accept x_i with probability min(1, p(x_i) / q(x_i)), where q
    is *exactly* the processed distribution x_i was drawn from (temperature, top-k, top-p applied to both;
    HF #47932 used the raw draft logits), then resample from norm(max(p - q, 0)) on the first rejection;
    the emitted tokens are distributed as the target's own samples.
Trees (`accept_tree_greedy`, `accept_tree_sampling`) walk from the root one depth at a time:
  * greedy: a node is accepted when its token is the target's argmax after its parent and its parent was
    accepted; siblings hold distinct tokens, so the accepted nodes form one path;
  * sampling: recursive rejection sampling over siblings (SpecInfer; without replacement as in SpecTr /
    Sequoia): at node c with target residual r (initially p_c), the children, drawn without replacement
    from q_c in rank order, are tried in turn — child x_i is accepted with min(1, r(x_i) / q_i(x_i)), where
    q_i is q_c renormalised without the earlier siblings; on rejection r ← norm(max(r − q_i, 0)). If every
    child is rejected the extra token is drawn from r; past the deepest accepted leaf it is the bonus from
    p. Lossless for any number of children per node that does not depend on those children's own draws
    (tree.py's growth rule guarantees that).
Distributions come in as log-probabilities from `jaxspec.sampling.processed_logprobs`."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def accepted_prefix(ok: jax.Array) -> jax.Array:
    """bool[B, k] per-position acceptance → i32[B] length of the all-True prefix."""
    return jnp.sum(jnp.cumprod(ok.astype(jnp.int32), axis=-1), axis=-1).astype(jnp.int32)


def accept_greedy(
    drafts: jax.Array, target_logits: jax.Array, valid: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """drafts: i32[B, k]; target_logits: f32[B, k+1, V]; valid: optional bool[B, k] prefix mask (an adaptive
    chain shorter than k) → (n_accepted i32[B], extra token i32[B])."""
    return accept_greedy_ids(drafts, jnp.argmax(target_logits, axis=-1).astype(jnp.int32), valid)


def accept_greedy_ids(drafts: jax.Array, best: jax.Array, valid: jax.Array | None = None):
    """`accept_greedy` from the target's argmax ids best i32[B, k+1] instead of its logits."""
    ok = drafts == best[:, :-1]
    n = accepted_prefix(ok if valid is None else ok & valid)
    return n, jnp.take_along_axis(best, n[:, None], axis=1)[:, 0]


def accept_sampling(
    key: jax.Array,
    drafts: jax.Array,
    draft_logprobs: jax.Array,
    target_logprobs: jax.Array,
    valid: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Speculative sampling for a chain.

    drafts: i32[B, k] drawn from q; draft_logprobs: f32[B, k, V] = log q_1..q_k (processed);
    target_logprobs: f32[B, k+1, V] = log p_0..p_k (processed); valid: optional bool[B, k] prefix mask (a
    draft past it was never proposed: the extra token there is the bonus from p).
    Returns (n_accepted i32[B], extra i32[B])."""
    if valid is not None:
        draft_logprobs = jnp.where(valid[..., None], draft_logprobs, -jnp.inf)
    B, k = drafts.shape
    k_accept, k_extra = jax.random.split(key)
    lp = jnp.take_along_axis(target_logprobs[:, :k], drafts[..., None], axis=-1)[..., 0]  # log p(x_i)  [B, k]
    lq = jnp.take_along_axis(draft_logprobs, drafts[..., None], axis=-1)[..., 0]  # log q(x_i)
    u = jax.random.uniform(k_accept, (B, k))
    ok = jnp.log(u) < lp - lq  # u < p/q, in log space (q(x_i) > 0: x_i was drawn from q)
    n = accepted_prefix(ok if valid is None else ok & valid)

    # the extra token: from norm(max(p_n - q_n, 0)) after a rejection, from p_k when all were accepted
    p_n = jnp.exp(jnp.take_along_axis(target_logprobs, n[:, None, None], axis=1)[:, 0])  # [B, V]
    q_pad = jnp.concatenate([jnp.exp(draft_logprobs), jnp.zeros_like(p_n)[:, None]], axis=1)  # q_{k+1} := 0
    q_n = jnp.take_along_axis(q_pad, n[:, None, None], axis=1)[:, 0]
    extra = jax.random.categorical(k_extra, jnp.log(residual(p_n, q_n)), axis=-1).astype(jnp.int32)
    return n, extra


def residual(p: jax.Array, q: jax.Array) -> jax.Array:
    """norm(max(p − q, 0)) over the last axis: the distribution to draw from after rejecting a draw of q.
    Where p == q leaves no mass (rejection then had probability 0) it is p. The renormalisation matters
    wherever the residual is used again as a target (a tree's next sibling is accepted with r(x)/q(x))."""
    res = jnp.maximum(p - q, 0.0)
    mass = jnp.sum(res, axis=-1, keepdims=True)
    return jnp.where(mass > 0, res / jnp.where(mass > 0, mass, 1.0), p)


def _normalise(x: jax.Array) -> jax.Array:
    return x / jnp.sum(x, axis=-1, keepdims=True)


def accept_tree_greedy(tree, target_logits: jax.Array, shape) -> tuple[jax.Array, jax.Array, jax.Array]:
    """tree: `Tree`; target_logits: f32[B, 1+N, V] over [root] + nodes.
    Returns (n i32[B] accepted depth, end i32[B] flat index of the deepest accepted node, extra i32[B])."""
    return accept_tree_greedy_ids(tree, jnp.argmax(target_logits, axis=-1).astype(jnp.int32), shape)


def accept_tree_greedy_ids(tree, best: jax.Array, shape) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`accept_tree_greedy` from the target's argmax ids best i32[B, 1+N] over [root] + nodes."""
    K = shape.width
    match = tree.valid & (tree.tokens == jnp.take_along_axis(best, tree.parent + 1, axis=1))
    acc = match[:, :K]
    for d in range(2, shape.depth + 1):  # a node needs its parent (one depth up) accepted
        blk = slice((d - 1) * K, d * K)
        par_ok = jnp.take_along_axis(acc, jnp.clip(tree.parent[:, blk], 0), axis=1)
        acc = jnp.concatenate([acc, match[:, blk] & par_ok], axis=1)
    depth = jnp.where(acc, shape.node_depths()[None], 0)
    n = jnp.max(depth, axis=1).astype(jnp.int32)
    end = jnp.argmax(depth, axis=1).astype(jnp.int32)
    extra = jnp.take_along_axis(best, jnp.where(n > 0, end + 1, 0)[:, None], axis=1)[:, 0]
    return n, end, extra


def accept_tree_sampling(
    key: jax.Array, tree, target_logprobs: jax.Array, shape
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Recursive rejection sampling over the tree (see the module docstring).

    tree.logq: f32[B, 1+(D-1)K, V] draft log-probs at the root and non-leaf nodes; target_logprobs:
    f32[B, 1+N, V] (processed) over [root] + nodes. Returns (n, end, extra) as `accept_tree_greedy`."""
    B, N = tree.tokens.shape
    K, D = shape.width, shape.depth
    V = target_logprobs.shape[-1]
    keys = jax.random.split(key, D * K + D + 1)
    rows = jnp.arange(B)
    cur = jnp.zeros((B,), jnp.int32)  # position of the current node in [root] + nodes
    alive = jnp.ones((B,), bool)  # still walking (the current node was accepted)
    n = jnp.zeros((B,), jnp.int32)
    extra = jnp.zeros((B,), jnp.int32)
    for d in range(1, D + 1):
        r = jnp.exp(target_logprobs[rows, cur])  # [B, V] residual of the target at the current node
        q_left = jnp.exp(tree.logq[rows, cur])  # draft distribution, earlier siblings removed (unnormalised)
        moved = jnp.zeros((B,), bool)
        nxt = cur
        for j in range(K):
            f = (d - 1) * K + j
            x = tree.tokens[:, f]
            is_child = alive & ~moved & tree.valid[:, f] & (tree.parent[:, f] + 1 == cur)
            q_i = _normalise(q_left)
            u = jax.random.uniform(keys[f], (B,))
            acc = is_child & (u * q_i[rows, x] < r[rows, x])
            rej = is_child & ~acc
            r = jnp.where(rej[:, None], residual(r, q_i), r)
            q_left = jnp.where(rej[:, None] & (jnp.arange(V)[None] == x[:, None]), 0.0, q_left)
            moved = moved | acc
            nxt = jnp.where(acc, f + 1, nxt)
        stop = alive & ~moved  # every child rejected (or none): the extra token comes from the residual
        draw = jax.random.categorical(keys[D * K + d - 1], jnp.log(r), axis=-1).astype(jnp.int32)
        extra = jnp.where(stop, draw, extra)
        n = jnp.where(alive & moved, d, n)
        alive = alive & moved
        cur = nxt
    bonus = jax.random.categorical(keys[-1], target_logprobs[rows, cur], axis=-1).astype(jnp.int32)
    extra = jnp.where(alive, bonus, extra)
    return n, jnp.maximum(cur - 1, 0), extra
