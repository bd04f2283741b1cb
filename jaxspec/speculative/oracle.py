"""Greedy speculation verified against a known continuation: acceptance experiments without the target.

Under greedy decoding every drafter's output is the target's greedy continuation (the engine's tests
prove it), so the target's argmax after any accepted prefix is already known: the next token of that
continuation. A node is accepted when its token is the argmax after its parent and its parent was
accepted — so every accepted node lies on the continuation, and its children are compared with the
continuation's next token. Feeding those ids to the engine's own acceptance rule reproduces a real run's
rounds, accepted lengths and drafter states exactly (tests/test_oracle.py checks the statistics against
the engine), while the only model that runs is the draft: a grid of drafter settings costs a fraction of
real speculation. Greedy only: sampled acceptance depends on the target's probabilities."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxspec.cache import init_cache
from jaxspec.decode import PAD, is_eos
from jaxspec.speculative.engine import SpecSpec, SpecState, advance, draft_round
from jaxspec.speculative.metrics import SpecStats
from jaxspec.speculative.seam import Outcome, Target, drafted_depths
from jaxspec.speculative.tree import path_nodes
from jaxspec.speculative.verify import accept_greedy_ids, accept_tree_greedy_ids


def continuation_buffer(outputs, max_new_tokens: int, depth: int):
    """Per-row greedy continuations → i32[B, N + D + 1]. Each must run N + D + 1 tokens, generated with
    no stop tokens: a last round may accept drafts past max_new_tokens or past an EOS (the engine then
    cuts them), and their acceptance is part of the statistics."""
    import numpy as np

    width = max_new_tokens + depth + 1
    short = [i for i, out in enumerate(outputs) if len(out) < width]
    if short:
        raise ValueError(
            f"oracle continuations must be {width} tokens (max_new_tokens + depth + 1, generated "
            f"without stop tokens); rows {short} are shorter"
        )
    return jnp.asarray(np.asarray([out[:width] for out in outputs], np.int32))


@functools.partial(jax.jit, static_argnames=("spec",))
def oracle_speculation(
    draft_params, prompts: jax.Array, prompt_lens: jax.Array, continuation: jax.Array, *, spec: SpecSpec
) -> SpecState:
    """Greedy speculation of `spec` whose verification reads the known target continuation i32[B, N+D+1]
    (`continuation_buffer`) instead of running the target. Same state and statistics as `run_speculation`;
    the target cache is a one-slot placeholder, so drafters that read the target (self-drafters) or the
    verification's logits / hidden states cannot run here."""
    if not spec.sampling.greedy:
        raise ValueError("oracle verification is exact for greedy decoding only")
    if spec.drafter.writes_target_cache or spec.drafter.hidden_layers:
        raise ValueError(
            "oracle verification runs no target: a drafter that uses the target's cache or hidden "
            "states needs the real engine"
        )
    B = prompts.shape[0]
    shape, N = spec.shape, spec.max_new_tokens
    placeholder = init_cache(spec.target, B, 1, layers=1)
    draft = spec.drafter.init(
        draft_params, Target(None, placeholder), prompts, prompt_lens, max_len=spec.draft_max_len, method=spec.method
    )
    first = continuation[:, 0]
    tokens = jnp.full((B, N + shape.depth + 1), PAD, jnp.int32).at[:, 0].set(first)
    state = SpecState(
        placeholder,
        draft,
        tokens,
        first,
        prompt_lens + 1,
        jnp.ones((B,), jnp.int32),
        is_eos(first, spec.eos_ids) | (N <= 1),
        SpecStats.zeros(B, shape.depth),
        jax.random.key(0),
    )
    depths = jnp.concatenate([jnp.zeros((1,), jnp.int32), shape.node_depths()])  # root, then every node

    def round_(s: SpecState) -> SpecState:
        s, t = draft_round(None, draft_params, s, spec)
        best = jnp.take_along_axis(
            continuation, jnp.minimum(s.num[:, None] + depths[None], continuation.shape[1] - 1), axis=1
        )  # the target's argmax at the root and after every node (if accepted)
        if shape.width == 1:
            n, extra = accept_greedy_ids(t.tokens, best, t.valid)
            path = jnp.broadcast_to(jnp.arange(shape.depth, dtype=jnp.int32), (B, shape.depth))
        else:
            n, end, extra = accept_tree_greedy_ids(t, best, shape)
            path = path_nodes(t, end, shape)
        out = Outcome(t, n, path, extra, s.last, s.committed, ~s.done, drafted_depths(t, shape), None, None)
        return advance(draft_params, s, out, spec)

    return lax.while_loop(lambda s: ~jnp.all(s.done), round_, state)
