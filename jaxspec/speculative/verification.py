"""The verification pass — the target over [last] + drafts — and what it can hand a drafter besides the
logits: hidden states at requested layers (`Drafter.hidden_layers`) and the drafter's extra head rows
(`Drafter.head_rows`: what an exit after a shallower layer would have predicted). Also the same head rows
over the prompt's end, from the prefill's own hidden states (`prompt_pass`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxspec.cache import KVCache
from jaxspec.config import ModelConfig
from jaxspec.masks import causal_mask
from jaxspec.model import embed, head, run_layers
from jaxspec.speculative.hot_vocab import HotVocab, restrict
from jaxspec.speculative.seam import HeadRows, PromptRows


def head_with_rows(params, rows, cfg: ModelConfig, vocab: HotVocab | None = None):
    """Final norm + LM head over rows f32[B, T, 1 + m, D] (the final layer's, then m head rows') in one
    call, so the head's weights are read once: (logits f32[B, T, V] of the final rows, the head rows'
    greedy tokens i32[B, T, m], their softmax probabilities f32[B, T, m]). `vocab`: a hot vocabulary —
    the head rows then give the token and probability its trimmed head would (the argmax over the kept
    tokens, softmax renormalised over them), the final rows stay full."""
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
    rows: HeadRows,
):
    """`model.forward_prompt` that also returns the head rows over each prompt's last `rows.prompt_width`
    positions (PromptRows): they come from the prefill's hidden states, so they cost only the LM head
    over width × (1 + m) rows, not a second pass over those positions."""
    B, P = prompts.shape
    W = min(rows.prompt_width, P)
    start = jnp.maximum(prompt_lens - W, 0)
    cols = start[:, None] + jnp.arange(W, dtype=jnp.int32)[None]  # [B, W]
    pos = jnp.broadcast_to(jnp.arange(P, dtype=jnp.int32)[None], (B, P))  # into an empty cache, as forward_prompt
    _, cache, hid = run_layers(
        params, embed(params, prompts, cfg), cache, pos, causal_mask(cache.lengths, P, P), cfg, return_hiddens=True
    )
    cache = cache.replace(lengths=cache.lengths + prompt_lens)
    at = lambda h: jnp.take_along_axis(h, jnp.minimum(cols, P - 1)[:, :, None], axis=1)  # noqa: E731
    x = jnp.stack([at(hid[-1])] + [at(hid[e - 1]) for e in rows.layers], axis=2)  # [B, W, 1 + m, D]
    logits, tokens, conf = head_with_rows(params, x, cfg, rows.vocab)
    last = jnp.take_along_axis(logits, (prompt_lens - 1 - start)[:, None, None], axis=1)  # [B, 1, V]
    return (
        last,
        cache,
        PromptRows(cols, cols < prompt_lens[:, None], jnp.argmax(logits, -1).astype(jnp.int32), tokens, conf),
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
    rows_now,
    *,
    cfg,
    hidden_layers,
    rows=None,
):
    """`verification_pass` over the first `width` positions, its outputs padded back to the full block
    (logits 0, head-row tokens −1: the padded nodes are invalid, never accepted nor counted)."""
    full = tokens.shape[1]
    logits, cache, hiddens, (sh, conf) = verification_pass(
        params,
        tokens[:, :width],
        cache,
        positions[:, :width],
        mask[:, :width],
        cfg,
        hidden_layers,
        rows,
        rows_now,
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
    rows: HeadRows | None = None,
    rows_now=None,
    rows_pick=None,
):
    """The target over the verified block tokens i32[B, T], writing K/V at `cache.lengths` (not advanced):
    (logits f32[B, T, V], cache, hiddens f32[B, T, len(hidden_layers), D] or None, (head-row tokens
    i32[B, T, m], their probabilities f32[B, T, m]) or (None, None)). The head rows — the greedy token
    an exit after each of `rows.layers` would give (final norm + LM head on that layer's output) — go
    through the head in one call with the final layer's rows, so the head's weights are read once.
    `rows_now` (traced bool, None: always): without it the head runs on the final rows only and the
    head-row outputs are placeholders (tokens −1, probabilities 0) — a drafter that skips a round's
    rows does not pay for them. `rows_pick` (traced i32[k], None: all m): only those layers' rows go
    through the head, the others' outputs are the placeholders. `rows.vocab`: the tokens the head rows
    are restricted to (head_with_rows)."""
    layers = rows.layers if rows is not None else ()
    want = tuple(hidden_layers) + tuple(layers)
    x, cache, hid = run_layers(
        params, embed(params, tokens, cfg), cache, positions, mask, cfg, return_hiddens=bool(want)
    )
    hiddens = jnp.stack([hid[e - 1] for e in hidden_layers], axis=2) if hidden_layers else None
    if not layers:
        return head(params, x, cfg), cache, hiddens, (None, None)
    stacked = jnp.stack([x] + [hid[e - 1] for e in layers], axis=2)  # [B, T, 1 + m, D]
    m = len(layers)

    def with_rows(r):
        if rows_pick is None:
            return head_with_rows(params, r, cfg, rows.vocab)
        picked = jnp.concatenate([r[:, :, :1], jnp.take(r, 1 + rows_pick, axis=2)], axis=2)  # [B, T, 1 + k, D]
        logits, tok, conf = head_with_rows(params, picked, cfg, rows.vocab)  # tok, conf [B, T, k]: back over the m
        return (
            logits,
            jnp.full(r.shape[:2] + (m,), -1, jnp.int32).at[:, :, rows_pick].set(tok),
            jnp.zeros(r.shape[:2] + (m,), jnp.float32).at[:, :, rows_pick].set(conf),
        )

    def without(r):
        return (
            head(params, r[:, :, 0], cfg),
            jnp.full(r.shape[:2] + (m,), -1, jnp.int32),
            jnp.zeros(r.shape[:2] + (m,), jnp.float32),
        )

    logits, tokens, conf = with_rows(stacked) if rows_now is None else lax.cond(rows_now, with_rows, without, stacked)
    return logits, cache, hiddens, (tokens, conf)
