"""Tiny target/draft pairs for the speculative tests.

The draft is the target's first layers (same embedding and head): scaling the target's extra layers'
residual outputs by `lam` dials the agreement from total (lam = 0: draft == target) to none in
particular (lam large), so one pair of static configs covers every accept/reject pattern without
recompiling."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxspec import init_params
from tests.helpers import tiny_cfg

TARGET = tiny_cfg(num_layers=3)
DRAFT = tiny_cfg(num_layers=2)


def make_pair(seed: int, lam: float, target_cfg=TARGET, draft_cfg=DRAFT, scale: float = 0.15):
    tp = init_params(jax.random.key(seed), target_cfg, scale=scale)
    layers = list(tp["layers"])
    for l in range(draft_cfg.num_layers, target_cfg.num_layers):  # the layers the draft lacks
        layers[l] = dict(layers[l], wo=layers[l]["wo"] * lam, w_down=layers[l]["w_down"] * lam)
    tp = dict(tp, layers=layers)
    dp = dict(tp, layers=layers[:draft_cfg.num_layers])
    return tp, dp


def flipped_draft(dp):
    """A draft whose argmax is never the target's: it proposes the *least* likely token."""
    return dict(dp, lm_head=-dp["lm_head"]) if "lm_head" in dp else dict(dp, embed=-dp["embed"])


def to_device(tree):
    return jax.tree.map(jnp.asarray, tree)
