"""Bonus calibration: rewriting the fuzzy K/V the layer-parallel draft left behind with one exact,
sequential draft pass over every committed token since the last precise slot (the accepted drafts and
the bonus token), fused with draft step 1 of the next round as the official code does: the pass's last
position gives the depth-1 distribution, so calibration costs no extra forward, only a wider step 1.

Policies (official `CandidateRefillPolicy`):
  every_round     calibrate at every round (the paper);
  every_mismatch  skip while every draft of the previous round was accepted (those fuzzy K/V are kept),
                  catch up at the next mismatch (the official default). Static shapes need a bound on
                  the stretch to recompute: after `max_fuzzy_rounds` skipped rounds the next one
                  calibrates anyway, so the exact block is (max_fuzzy_rounds + 1)·(D + 1) tokens wide.
                  The choice is per row: when rows disagree, the layer-parallel step 1 runs for all of
                  them and the exact pass after it, its block moved past the committed tokens (into
                  stale slots) for the rows that skip — a batch of B behaves as B single runs;
  prefill_only    only the prompt is exact;
  never           nothing is exact, not even the prompt.

The exact pass is the draft's own decoder, either the unrolled layer loop of `model.forward` (default:
faster on XLA:CPU, see the README's calibration table) or a `lax.scan` over all layers' weights stacked
once by `stack_all_layers` (a second copy of the draft's layer weights)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxspec.cache import KVCache
from jaxspec.config import ModelConfig
from jaxspec.masks import causal_mask
from jaxspec.model import decoder_layer, embed, forward, head

EVERY_ROUND, EVERY_MISMATCH, PREFILL_ONLY, NEVER = "every_round", "every_mismatch", "prefill_only", "never"
CALIBRATIONS = (EVERY_ROUND, EVERY_MISMATCH, PREFILL_ONLY, NEVER)


def exact_block_width(calibration: str, depth: int, max_fuzzy_rounds: int) -> int:
    """Tokens one calibration pass may have to feed (accepted drafts + bonus, per skipped round)."""
    if calibration == EVERY_ROUND:
        return depth + 1
    if calibration == EVERY_MISMATCH:
        return (max_fuzzy_rounds + 1) * (depth + 1)
    return 0


def rows_to_calibrate(advanced, all_accepted, pending, depth: int, width: int):
    """every_mismatch, bool[B]: which rows calibrate this round — after a mismatch, or when skipping once
    more could overflow the block. `advanced`: the row committed tokens since the last round (finished
    rows do not, and never calibrate); `pending` i32[B]: tokens an exact pass would feed now."""
    return advanced & (~all_accepted | (pending + depth + 1 > width))


def stack_all_layers(params) -> dict:
    """Every layer's weights stacked on a leading layer axis (the scan variant's operand)."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *params["layers"])


def _scan_layers(stacked, x, cache: KVCache, positions, mask, cfg: ModelConfig):
    """`run_layers` as a lax.scan over stacked weights; the per-layer caches are stacked for the scan
    and split again afterwards (small next to the weights: 24 KB per token for the Qwen-0.5B)."""

    def body(x, xs):
        p, kc, vc = xs
        x, kc, vc = decoder_layer(p, x, kc, vc, positions, cache.lengths, mask, cfg)
        return x, (kc, vc)

    x, (ks, vs) = lax.scan(body, x, (stacked, jnp.stack(cache.k), jnp.stack(cache.v)))
    n = cfg.num_layers
    return x, cache.replace(k=tuple(ks[l] for l in range(n)), v=tuple(vs[l] for l in range(n)))


def exact_pass(params, stacked_layers, tokens, cache: KVCache, positions, logits_at, cfg: ModelConfig, scan: bool):
    """The exact sequential draft over tokens i32[B, W] written at `cache.lengths`, causal: (logits at
    `logits_at` i32[B, 1], cache advanced by W). `scan` picks the lax.scan variant."""
    if not scan:
        return forward(params, tokens, cache, cfg, positions=positions, logits_at=logits_at)[:2]
    B, W = tokens.shape
    mask = causal_mask(cache.lengths, W, cache.max_len)
    x, cache = _scan_layers(stacked_layers, embed(params, tokens, cfg), cache, positions, mask, cfg)
    x = jnp.take_along_axis(x, logits_at[:, :, None], axis=1)
    return head(params, x, cfg), cache.replace(lengths=cache.lengths + W)
