"""Tiny target/draft pairs for the speculative tests.

The draft is the target's first layers (same embedding and head): scaling the target's extra layers'
residual outputs by `lam` dials the agreement from total (lam = 0: draft == target) to none in
particular (lam large), so one pair of static configs covers every accept/reject pattern without
recompiling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec import init_params
from tests.helpers import exact_forward, tiny_cfg

TARGET = tiny_cfg(num_layers=3)
DRAFT = tiny_cfg(num_layers=2)


def make_pair(seed: int, lam: float, target_cfg=TARGET, draft_cfg=DRAFT, scale: float = 0.15):
    tp = init_params(jax.random.key(seed), target_cfg, scale=scale)
    layers = list(tp["layers"])
    for l in range(draft_cfg.num_layers, target_cfg.num_layers):  # the layers the draft lacks
        layers[l] = dict(layers[l], wo=layers[l]["wo"] * lam, w_down=layers[l]["w_down"] * lam)
    tp = dict(tp, layers=layers)
    dp = dict(tp, layers=layers[: draft_cfg.num_layers])
    return tp, dp


def flipped_draft(dp):
    """A draft whose argmax is never the target's: it proposes the *least* likely token."""
    return dict(dp, lm_head=-dp["lm_head"]) if "lm_head" in dp else dict(dp, embed=-dp["embed"])


def to_device(tree):
    return jax.tree.map(jnp.asarray, tree)


def assert_target_cache_is_vanillas(cache, tp, cfg, prompts, outputs, slots: int) -> None:
    """Each row's target cache holds exactly what vanilla decoding would: the K/V of every committed token
    but the newest (prompt + output minus one), per layer, as one forward over the sequence computes them."""
    for i, (p, out) in enumerate(zip(prompts, outputs)):
        seq = p + out
        n = len(seq) - 1
        ref = exact_forward(tp, seq, cfg, slots)[1]
        for layer in range(cfg.num_layers):
            for got, want in ((cache.k, ref.k), (cache.v, ref.v)):
                np.testing.assert_allclose(
                    np.asarray(got[layer][i, :, :n]), np.asarray(want[layer][0, :, :n]), atol=2e-5
                )


def pool_outcomes(hist: dict, stats, batch: int) -> None:
    """Add the first `batch` rows' rounds to `hist` by outcome: drafts rejected at once ("none"), partly
    ("partial") or wholly ("full") accepted — what a property test must have covered for its equality
    to prove much."""
    from jaxspec.speculative import summarize

    h = summarize(stats, list(range(batch)))["histogram"]  # rounds by accepted length 0..depth
    hist["none"] += h[0]
    hist["partial"] += sum(h[1:-1])
    hist["full"] += h[-1]
