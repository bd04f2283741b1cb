"""The computation tests/test_multihost.py runs once in 2 processes and once in 1 (same 8-device mesh)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxspec import DecodeSpec, generate, make_mesh, output_ids, pad_prompts, plan_for
from jaxspec.distributed import to_host
from jaxspec.sharding import replicated_plan, shard_model, shard_params
from jaxspec.speculative import Model, chain, speculate, tree
from tests.helpers import random_prompts
from tests.spec_helpers import DRAFT, TARGET, make_pair

PROMPTS = random_prompts(np.random.default_rng(7), [5, 11, 3])


def run_case() -> dict:
    """Vanilla and speculative (chain, tree) greedy tokens on a tp=8 mesh over every device of the run."""
    mesh = make_mesh({"tp": 8})
    tp, dp = make_pair(3, 0.3)
    plan = plan_for(TARGET, mesh)
    target = Model(shard_params(tp, TARGET, plan), TARGET, plan)
    dplan = replicated_plan(mesh)
    draft = Model(shard_params(dp, DRAFT, dplan), DRAFT, dplan)
    arr, lens, slots = pad_prompts(PROMPTS, TARGET, 16)
    vanilla = output_ids(
        jax.jit(generate, static_argnames=("spec",))(
            target.params,
            jnp.asarray(arr),
            jnp.asarray(lens),
            jax.random.key(0),
            spec=DecodeSpec(TARGET, 16, slots, plan=plan),
        )
    )
    out = {"vanilla": vanilla}
    for name, method in (("chain", chain(3)), ("tree", tree(3, 2))):
        res = speculate(target, draft, PROMPTS, method=method, max_new_tokens=16)
        out[name] = res.output_ids
        out[name + "_accepted"] = res.stats["accepted"]
    # data × tp = 2 × 4: the batch split over data (in 2 processes, rows on both hosts)
    dparams, dcfg, dplan = shard_model(tp, TARGET, make_mesh({"data": 2, "tp": 4}))
    arr, lens, slots = pad_prompts(PROMPTS + [[4, 4, 2]], TARGET, 16)
    out["data_vanilla"] = output_ids(
        jax.jit(generate, static_argnames=("spec",))(
            dparams,
            jnp.asarray(arr),
            jnp.asarray(lens),
            jax.random.key(0),
            spec=DecodeSpec(dcfg, 16, slots, plan=dplan),
        )
    )
    # an output split across the processes (a row per device): to_host must gather it, np.asarray cannot
    rows = jax.jit(lambda: jnp.arange(24).reshape(8, 3), out_shardings=NamedSharding(mesh, P("tp")))()
    out["sharded_rows"] = to_host(rows).tolist()
    return out


def load_case(hf_dir, checkpoint_root) -> dict:
    """A HF directory loaded onto the tp=8 mesh twice — converted and saved (the multi-process orbax save
    when run in 2 processes), then restored from that checkpoint — and the prompts' logits from each; the
    weight bytes each process read converting (streamed per device slice: each its own devices' share)."""
    from jax.experimental import multihost_utils

    from conversion.loader import load_model
    from jaxspec import forward, init_cache

    mesh = make_mesh({"tp": 8})
    out = {}
    for name in ("converted", "restored"):
        m = load_model(hf_dir, mesh=mesh, tokenizer=False, checkpoint_root=checkpoint_root)
        arr, _, _ = pad_prompts(PROMPTS, m.cfg, 16)
        logits = jax.jit(lambda p, t: forward(p, t, init_cache(m.cfg, len(PROMPTS), 32), m.cfg)[0])(
            m.params, jnp.asarray(arr)
        )
        out[name] = {"from_checkpoint": m.from_checkpoint, "logits": to_host(logits).round(5).tolist()}
        if name == "converted":
            out["bytes_read"] = multihost_utils.process_allgather(np.array([m.bytes_read])).ravel().tolist()
    return out
