"""Measured step costs and the analytic speedup of a speculative configuration.

analytic speedup = E[tokens per round] / ((drafting + verifying one round) / one target step), with
  E[tokens per round] = the measured mean accepted length (1 + accepted / rounds);
  one target step     = a target forward of 1 token;
  verifying           = a target forward of 1 + D·K tokens (tree mask for trees);
  drafting            = a draft forward of 2 tokens (the round's first step) + (k̄ - 1) forwards of K tokens,
                        k̄ = the mean drafted depth per round (D, or less for adaptive chains).
Every forward runs on a cache holding `context` tokens, best of `repeats`, compiled beforehand. The
engine's own work (tree growth, acceptance, bookkeeping) is *not* in the model: the achieved fraction of
the analytic speedup shows what it costs."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxspec.cache import init_cache
from jaxspec.config import ModelConfig
from jaxspec.masks import tree_mask
from jaxspec.model import forward
from jaxspec.speculative.tree import TreeShape
from jaxspec.timing import best_time


@functools.partial(jax.jit, static_argnames=("cfg", "tree"))
def _step(params, tokens, cache, *, cfg: ModelConfig, tree: bool):
    T = tokens.shape[1]
    mask = None
    if tree:  # the cost of a tree mask (a root plus one depth of siblings) rather than a causal one
        anc = jnp.eye(T, dtype=bool).at[:, 0].set(True)
        mask = tree_mask(cache.lengths, anc, cache.max_len)
    return forward(params, tokens, cache, cfg, mask=mask)[0]


def time_forward(
    params, cfg: ModelConfig, T: int, *, context: int, max_len: int, tree: bool = False, repeats: int = 5
) -> float:
    """Best-of-`repeats` seconds of one batch-1 forward of T tokens after `context` cached tokens."""
    cache = init_cache(cfg, 1, max_len).replace(lengths=jnp.asarray([context], jnp.int32))
    toks = jnp.ones((1, T), jnp.int32)
    return best_time(functools.partial(_step, cfg=cfg, tree=tree), params, toks, cache, repeats=repeats)


def step_costs(
    target_params,
    target_cfg: ModelConfig,
    draft_params,
    draft_cfg: ModelConfig,
    shape: TreeShape,
    *,
    context: int,
    max_len: int,
    repeats: int = 5,
    drafter=None,
) -> dict:
    """Seconds of the forwards a round is made of (see the module docstring). `draft_params` are the
    drafter's prepared params (`drafter.prepare`; a DraftModel's are the model's own). A `drafter` with
    its own `draft_costs` (EasySpec: calibration pass, layer-parallel steps; LayerSkip: the shallow layers)
    times its forwards itself, on its prepared params or, for a self-drafter, the target's."""
    tree = shape.width > 1
    own = (
        None
        if drafter is None
        else drafter.draft_costs(
            target_params if drafter.writes_target_cache else draft_params,
            shape,
            context=context,
            max_len=max_len,
            repeats=repeats,
        )
    )
    if own is not None:
        return {
            "context": context,
            "target_step_s": time_forward(
                target_params, target_cfg, 1, context=context, max_len=max_len, repeats=repeats
            ),
            "verify_s": time_forward(
                target_params, target_cfg, 1 + shape.nodes, context=context, max_len=max_len, tree=tree, repeats=repeats
            ),
            **own,
        }
    return {
        "context": context,
        "target_step_s": time_forward(target_params, target_cfg, 1, context=context, max_len=max_len, repeats=repeats),
        "verify_s": time_forward(
            target_params, target_cfg, 1 + shape.nodes, context=context, max_len=max_len, tree=tree, repeats=repeats
        ),
        "draft_first_s": time_forward(draft_params, draft_cfg, 2, context=context, max_len=max_len, repeats=repeats),
        "draft_step_s": time_forward(
            draft_params, draft_cfg, shape.width, context=context, max_len=max_len, tree=tree, repeats=repeats
        ),
    }


def analytic_speedup(costs: dict, mean_accepted_length: float, mean_depth: float) -> dict:
    """The analytic speedup from measured costs, the measured mean accepted length and the mean drafted
    depth per round; also the round's cost in target steps."""
    draft = costs["draft_first_s"] + max(mean_depth - 1, 0) * costs["draft_step_s"]
    round_in_steps = (draft + costs["verify_s"]) / costs["target_step_s"]
    return {
        "analytic_speedup": mean_accepted_length / round_in_steps,
        "round_cost_in_target_steps": round_in_steps,
        "draft_cost_ratio": costs["draft_step_s"] / costs["target_step_s"],
        "verify_cost_ratio": costs["verify_s"] / costs["target_step_s"],
    }
