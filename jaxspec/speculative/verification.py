"""The verification pass — the target over [last] + drafts — and what it can hand a drafter besides the
logits: hidden states at requested layers and "shadow tokens" (what an exit after a shallower layer
would have predicted, DEL). Also the same shadow rows over the prompt's end, from the prefill's own
hidden states (`prompt_pass`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxspec.cache import KVCache
from jaxspec.config import ModelConfig
from jaxspec.masks import causal_mask
from jaxspec.model import embed, head, run_layers
from jaxspec.speculative.hot_vocab import HotVocab, restrict
from jaxspec.speculative.seam import PromptShadows


def shadow_head(params, rows, cfg: ModelConfig, vocab: HotVocab | None = None):
    """Final norm + LM head over rows f32[B, T, 1 + m, D] (the final layer's, then m shadow layers') in
    one call, so the head's weights are read once: (logits f32[B, T, V] of the final rows, shadow
    tokens i32[B, T, m], their softmax probabilities f32[B, T, m]). `vocab`: the drafter's hot
    vocabulary — the shadow rows then give the token and probability its trimmed head would (the
    argmax over the kept tokens, softmax renormalised over them), the final rows stay full."""
    lg = head(params, rows, cfg)  # [B, T, 1 + m, V]
    sl = restrict(lg[:, :, 1:], vocab)
    conf = jnp.exp(jnp.max(sl, axis=-1) - jax.nn.logsumexp(sl, axis=-1))  # max softmax probability, T = 1
    return lg[:, :, 0], jnp.argmax(sl, axis=-1).astype(jnp.int32), conf


def prompt_pass(
    params,
    prompts,
    prompt_lens,
    cache: KVCache,
    cfg: ModelConfig,
    shadow_layers: tuple[int, ...],
    width: int,
    shadow_vocab: HotVocab | None = None,
):
    """`model.forward_prompt` that also returns the shadow tokens over each prompt's last `width`
    positions (PromptShadows): the rows come from the prefill's hidden states, so seeding costs only
    the LM head over width × (1 + m) rows, not a second pass over those positions."""
    B, P = prompts.shape
    W = min(width, P)
    start = jnp.maximum(prompt_lens - W, 0)
    cols = start[:, None] + jnp.arange(W, dtype=jnp.int32)[None]  # [B, W]
    pos = jnp.broadcast_to(jnp.arange(P, dtype=jnp.int32)[None], (B, P))  # into an empty cache, as forward_prompt
    _, cache, hid = run_layers(
        params, embed(params, prompts, cfg), cache, pos, causal_mask(cache.lengths, P, P), cfg, return_hiddens=True
    )
    cache = cache.replace(lengths=cache.lengths + prompt_lens)
    at = lambda h: jnp.take_along_axis(h, jnp.minimum(cols, P - 1)[:, :, None], axis=1)  # noqa: E731
    rows = jnp.stack([at(hid[-1])] + [at(hid[e - 1]) for e in shadow_layers], axis=2)  # [B, W, 1 + m, D]
    logits, tokens, conf = shadow_head(params, rows, cfg, shadow_vocab)
    last = jnp.take_along_axis(logits, (prompt_lens - 1 - start)[:, None, None], axis=1)  # [B, 1, V]
    return (
        last,
        cache,
        PromptShadows(cols, cols < prompt_lens[:, None], jnp.argmax(logits, -1).astype(jnp.int32), tokens, conf),
    )


def verify_widths(spec) -> tuple[int, ...]:
    """The verification block's widths: [last] + every node, or — for chains whose drafted depth varies
    from round to round (adaptive chains, confidence stops, DEL's plain steps) — the narrowest of 1, 2, 4,
    8, … , 1 + N that holds the round's drafts (a `lax.switch`): a round that drafted 2 tokens verifies 3
    positions, not 19, which matters wherever the block's compute, not the weight reads, sets its cost.
    A method with `narrow=False` always verifies the full block."""
    full = 1 + spec.shape.nodes
    if spec.shape.width != 1 or not spec.method.narrow or not (spec.method.adaptive or spec.drafter.variable_depth):
        return (full,)
    return chain_widths(full)


def chain_widths(full: int) -> tuple[int, ...]:
    """The width buckets of a variable-depth chain's verification block of at most `full` positions."""
    return tuple(w for w in (1, 2, 4, 8, 16, 32, 64) if w < full) + (full,)


def narrow_pass(
    width: int,
    params,
    tokens,
    cache,
    positions,
    mask,
    shadow_now,
    *,
    cfg,
    hidden_layers,
    shadow_layers,
    shadow_vocab=None,
):
    """`verification_pass` over the first `width` positions, its outputs padded back to the full block
    (logits 0, shadow tokens −1: the padded nodes are invalid, never accepted nor counted)."""
    full = tokens.shape[1]
    logits, cache, hiddens, (sh, conf) = verification_pass(
        params,
        tokens[:, :width],
        cache,
        positions[:, :width],
        mask[:, :width],
        cfg,
        hidden_layers,
        shadow_layers,
        shadow_now,
        shadow_vocab=shadow_vocab,
    )

    def pad(x, v=0):
        return (
            None
            if x is None
            else jnp.pad(
                x,
                [(0, 0), (0, full - width)] + [(0, 0)] * (x.ndim - 2),
                constant_values=v,
            )
        )

    return pad(logits), cache, pad(hiddens), (pad(sh, -1), pad(conf))


def verification_pass(
    params,
    tokens,
    cache: KVCache,
    positions,
    mask,
    cfg: ModelConfig,
    hidden_layers: tuple[int, ...] = (),
    shadow_layers: tuple[int, ...] = (),
    shadow_now=None,
    shadow_pick=None,
    shadow_vocab: HotVocab | None = None,
):
    """The target over the verified block tokens i32[B, T], writing K/V at `cache.lengths` (not advanced):
    (logits f32[B, T, V], cache, hiddens f32[B, T, len(hidden_layers), D] or None, (shadow tokens
    i32[B, T, m], their probabilities f32[B, T, m]) or (None, None)). The shadow rows — the greedy token
    an exit after each of `shadow_layers` would give (final norm + LM head on that layer's output) —
    go through the head in one call with the final layer's rows, so the head's weights are read once.
    `shadow_now` (traced bool, None: always): without it the head runs on the final rows only and the
    shadow outputs are placeholders (tokens −1, probabilities 0) — a drafter that skips a round's
    statistics does not pay for them. `shadow_pick` (traced i32[k], None: all m): only those shadow
    layers' rows go through the head, the others' outputs are the placeholders. `shadow_vocab`: the
    drafter's hot vocabulary, which the shadow rows are restricted to (shadow_head)."""
    want = tuple(hidden_layers) + tuple(shadow_layers)
    x, cache, hid = run_layers(
        params, embed(params, tokens, cfg), cache, positions, mask, cfg, return_hiddens=bool(want)
    )
    hiddens = jnp.stack([hid[e - 1] for e in hidden_layers], axis=2) if hidden_layers else None
    if not shadow_layers:
        return head(params, x, cfg), cache, hiddens, (None, None)
    rows = jnp.stack([x] + [hid[e - 1] for e in shadow_layers], axis=2)  # [B, T, 1 + m, D]
    m = len(shadow_layers)

    def with_shadows(rows):
        if shadow_pick is None:
            return shadow_head(params, rows, cfg, shadow_vocab)
        picked = jnp.concatenate([rows[:, :, :1], jnp.take(rows, 1 + shadow_pick, axis=2)], axis=2)  # [B, T, 1 + k, D]
        logits, tok, conf = shadow_head(params, picked, cfg, shadow_vocab)  # tok, conf [B, T, k]: back over the m
        return (
            logits,
            jnp.full(rows.shape[:2] + (m,), -1, jnp.int32).at[:, :, shadow_pick].set(tok),
            jnp.zeros(rows.shape[:2] + (m,), jnp.float32).at[:, :, shadow_pick].set(conf),
        )

    def without(rows):
        return (
            head(params, rows[:, :, 0], cfg),
            jnp.full(rows.shape[:2] + (m,), -1, jnp.int32),
            jnp.zeros(rows.shape[:2] + (m,), jnp.float32),
        )

    logits, tokens, conf = (
        with_shadows(rows) if shadow_now is None else lax.cond(shadow_now, with_shadows, without, rows)
    )
    return logits, cache, hiddens, (tokens, conf)
