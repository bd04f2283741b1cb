"""The draft tree's bookkeeping (speculative/tree.py) against brute force: `select_children` under ties,
`add_depth`'s ancestor sets, `path_nodes`, and the verification mask built from them."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxspec.speculative.tree import TreeShape, add_depth, init_tree, path_nodes, select_children, verify_ancestors
from tests.helpers import examples


@settings(max_examples=examples(60))
@given(st.integers(1, 4), st.integers(1, 4), st.data())
def test_select_children_is_a_rank_prefix_of_the_global_top_k_under_ties(M, K, data):
    # small integer scores: ties everywhere, across parents and within one parent's ranks
    log_pi = np.asarray(data.draw(st.lists(st.integers(-2, 0), min_size=M, max_size=M)), np.float32)
    rows = [sorted(data.draw(st.lists(st.integers(-3, 0), min_size=K, max_size=K)), reverse=True) for _ in range(M)]
    score = np.asarray(rows, np.float32)  # per parent in rank order: non-increasing, as ranked_children gives
    sel = select_children(jnp.asarray(log_pi)[None], jnp.asarray(score)[None], K)
    chex.assert_shape(sel, (1, K))
    chex.assert_type(sel, jnp.int32)
    got = np.asarray(sel)[0]
    total = (log_pi[:, None] + score).ravel()
    assert len(set(got)) == K and list(got) == sorted(got) and got.min() >= 0 and got.max() < M * K
    assert sorted(total[got]) == sorted(total)[-K:]  # the K best candidates (ties: any of equal value)
    for v in range(M):  # a parent's children are its best ranks: 0, 1, …, c − 1
        ranks = [int(i) % K for i in got if int(i) // K == v]
        assert ranks == list(range(len(ranks)))


def test_select_children_by_hand():
    # two parents tied on every rank: the first parent's ranks 0 and 1, then the second's rank 0
    got = select_children(jnp.zeros((1, 2)), jnp.asarray([[[-1.0, -2.0, -3.0], [-1.0, -2.0, -3.0]]]), 3)
    assert np.asarray(got).tolist() == [[0, 1, 3]]


def _build(shape: TreeShape, parents: list[list[int]]):
    """A tree of one row from each depth's parent pointers (flat indices, −1 = the root)."""
    t = init_tree(1, shape, None)
    for d, par in enumerate(parents, start=1):
        toks = jnp.asarray([[10 * d + j for j in range(shape.width)]], jnp.int32)
        t = add_depth(t, jnp.int32(d), toks, jnp.asarray([par], jnp.int32), jnp.ones((1, shape.width), bool), shape)
    return t


PARENTS = [[-1, -1, -1], [0, 0, 2], [4, 3, 3]]  # depth 1: three root children; 2: under 0, 0, 2; 3: under 4, 3, 3


def _chain_to_root(parents_flat: list[int], f: int) -> list[int]:
    path = []
    while f >= 0:
        path.append(f)
        f = parents_flat[f]
    return path[::-1]


def test_add_depth_ancestors_and_path_nodes_against_parent_pointers():
    shape = TreeShape(3, 3)
    t = _build(shape, PARENTS)
    flat = list(itertools.chain(*PARENTS))
    assert np.asarray(t.parent)[0].tolist() == flat and np.asarray(t.tokens)[0].tolist() == [
        10,
        11,
        12,
        20,
        21,
        22,
        30,
        31,
        32,
    ]
    anc = np.asarray(t.ancestors)[0]
    for f in range(shape.nodes):  # ancestors[f, g]: g is f or one of its ancestors
        assert set(np.flatnonzero(anc[f])) == set(_chain_to_root(flat, f)), f
    many = jax.tree.map(lambda x: jnp.repeat(x, shape.nodes, axis=0), t)  # one row per end node
    paths = path_nodes(many, jnp.arange(shape.nodes, dtype=jnp.int32), shape)
    chex.assert_shape(paths, (shape.nodes, shape.depth))
    chex.assert_type(paths, jnp.int32)
    paths = np.asarray(paths)
    for f in range(shape.nodes):  # entry j: the depth-(j+1) node on the root-to-f path
        want = _chain_to_root(flat, f)
        assert paths[f][: len(want)].tolist() == want, f


def test_verify_mask_puts_the_root_before_every_node():
    shape = TreeShape(2, 2)
    t = _build(shape, [[-1, -1], [1, 1]])
    m = verify_ancestors(t)
    chex.assert_shape(m, (1, 5, 5))  # [B, 1 + N, 1 + N] over [root] + nodes
    chex.assert_type(m, bool)
    m = np.asarray(m)[0]
    want = np.zeros((5, 5), bool)
    want[:, 0] = True
    for f, anc in enumerate([[0], [1], [1, 2], [1, 3]]):
        want[1 + f, [1 + a for a in anc]] = True
    np.testing.assert_array_equal(m, want)
