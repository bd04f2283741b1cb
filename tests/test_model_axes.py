"""The model axes: on a mesh with a "layer" axis (EasySpec's) every model is tensor-parallel over layer × tp
together (sharding.model_axes), or over the largest part of them that divides a dimension — the target, the
draft models and the self-drafters alike; outputs equal the unsharded runs and the compiled collectives span
the devices the plan says."""

import jax
import numpy as np
import pytest

from jaxspec import init_params, make_mesh
from jaxspec.sharding import shard_model
from tests.helpers import random_prompts, tiny_cfg
from tests.test_sharding import CFG, PARAMS, _collectives, _run
from tests.test_speculative import EOS


@pytest.mark.parametrize(
    "axes, tp", [({"layer": 4, "tp": 2}, 8), ({"layer": 8}, 8), ({"data": 2, "layer": 2, "tp": 2}, 4)], ids=str
)
def test_the_target_spans_the_layer_and_tp_axes(axes, tp):
    """On a mesh with a "layer" axis (EasySpec's) the model is tensor-parallel over layer × tp together —
    no device holds an idle copy: each of the 8 (or, beside data=2, 4) devices holds 1/tp of the heads and
    the MLP (kv heads repeated to one a device), the output is the unsharded run's, and every all-reduce
    of the compiled generation spans the tp devices of the model axes (per layer and forward: after
    attention and after the MLP), as on a plain tp mesh of that size; beside a data axis the loop's
    stopping condition (a pred[]) is all-reduced over the data groups."""
    mesh = make_mesh(axes)
    params, cfg, plan = shard_model(PARAMS, CFG, mesh)
    layer = params["layers"][0]
    assert layer["wq"].addressable_shards[0].data.shape[0] == CFG.num_heads * CFG.head_dim // tp
    assert layer["w_up"].addressable_shards[0].data.shape[0] == CFG.intermediate_size // tp
    assert layer["wk"].addressable_shards[0].data.shape[0] == CFG.head_dim  # kv heads repeated: one a device
    assert len({s.device for s in layer["w_up"].addressable_shards}) == 8
    rows = axes.get("data", 1) * 2
    prompts = random_prompts(np.random.default_rng(11), [5, 9, 3, 7][:rows], vocab=96)
    ref_logits, ref_ids = _run(PARAMS, None, prompts)
    logits, ids = _run(params, plan, prompts, cfg)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
    assert ids == ref_ids
    got = _collectives(CFG, axes, groups=True)
    done = [g for s, g in got["all-reduce"] if s == "pred[]"]
    assert done == ([axes["data"]] if "data" in axes else []), got["all-reduce"]
    reduces = [g for s, g in got["all-reduce"] if s != "pred[]"]
    assert len(reduces) == 2 * 2 * CFG.num_layers + 2, got["all-reduce"]
    assert set(reduces + [g for _, g in got.get("all-gather", [])]) == {tp}, got


@pytest.mark.parametrize(
    "cfg, heads, mlp, note",
    [  # (config on layer=2 × tp=3, devices splitting heads / MLP, a note)
        (
            tiny_cfg(vocab_size=96, num_heads=9, num_kv_heads=3, intermediate_size=96),
            3,
            6,
            "attention split over tp=3 only",
        ),
        (tiny_cfg(vocab_size=96), 2, 2, "MLP split over layer=2 only: layer×tp=6 does not divide the MLP width 64"),
        (tiny_cfg(vocab_size=96, num_heads=7, num_kv_heads=7, intermediate_size=96), 1, 6, "attention replicated"),
    ],
    ids=["9-heads", "8-heads", "7-heads"],
)
def test_what_layer_and_tp_cannot_split_together_is_split_over_part_of_them(cfg, heads, mlp, note):
    """A dimension that layer × tp (6 devices) does not divide is split over the largest part of the model
    axes that does (9 heads: over tp=3, replicated over layer) — replicated only when no part does; the
    plan says which, and the output is the unsharded run's."""
    params = init_params(jax.random.key(2), cfg, scale=0.15)
    sharded, scfg, plan = shard_model(params, cfg, make_mesh({"layer": 2, "tp": 3}))
    assert any(n.startswith(note) for n in plan.notes), plan.notes
    layer = sharded["layers"][0]
    assert layer["wq"].addressable_shards[0].data.shape[0] == cfg.num_heads * cfg.head_dim // heads
    assert layer["w_up"].addressable_shards[0].data.shape[0] == cfg.intermediate_size // mlp
    prompts = random_prompts(np.random.default_rng(4), [6, 3], vocab=96)
    ref_logits, ref_ids = _run(params, None, prompts, cfg)
    logits, ids = _run(sharded, plan, prompts, scfg)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
    assert ids == ref_ids


@pytest.mark.parametrize("method", ["ls", pytest.param("del", marks=pytest.mark.slow)])
def test_self_drafters_on_a_layer_and_tp_mesh_equal_vanilla(method):
    """A self-drafter drafts with the target's own layers, so it runs on the target's layer × tp plan: LS
    (exit 2) and DEL (the paper's layer count) on layer=2 × tp=2 give the unsharded vanilla tokens."""
    from jaxspec.speculative import Model, speculate
    from tests.test_speculative import N_NEW, TARGET, make_pair, vanilla_rows

    tp_, _ = make_pair(5, 0.3)
    prompts = random_prompts(np.random.default_rng(13), [6, 10])
    options = {"exit_layer": 2} if method == "ls" else {"cost": "layers"}
    sharded = Model(*shard_model(tp_, TARGET, make_mesh({"layer": 2, "tp": 2})))
    got = speculate(sharded, None, prompts, method=method, options=options, max_new_tokens=N_NEW, eos_ids=EOS)
    assert got.output_ids == vanilla_rows(tp_, prompts)
