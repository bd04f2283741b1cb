"""The compile-only planner (jaxspec/plan.py, `python -m jaxspec plan`): its bytes against a real compiled run
on simulated CPU devices, every method's loop compiled for a TPU topology (libtpu, the tpu-plan extra), the
bisection, the report, and its errors."""

import json

import jax
import numpy as np
import pytest

from jaxspec import plan as P
from jaxspec.plan_presets import tpu_devices
from jaxspec.sharding import bytes_per_device, shard_model
from tests.helpers import tiny_cfg

TARGET, DRAFT = tiny_cfg(num_layers=4, vocab_size=96), tiny_cfg(num_layers=2, vocab_size=96)
GROUPED = tiny_cfg(num_layers=6, vocab_size=96)  # a draft with an EasySpec group: [0] [1 2 3 4] [5]


def test_planned_bytes_equal_a_real_compiled_run():
    """chain k=3 on layer=2 × tp=2: the plan's weights per device equal the real sharded params', and its
    compiled loop's arguments / temporaries / outputs equal those of the same loop compiled on real arrays;
    the planned caches equal the real run's cache shards."""
    from jaxspec.speculative import DraftModel, chain, make_spec, run_speculation
    from tests.spec_helpers import make_pair

    mesh = P.mesh_on(jax.devices()[:4], {"layer": 2, "tp": 2})
    plan = P.plan_speculative(TARGET, DRAFT, "chain", mesh, batch=2, context=64, shape={"k": 3})
    tp, dp = make_pair(0, 0.3, TARGET, DRAFT)
    (tparams, tcfg, tplan), (dparams, dcfg, dplan) = shard_model(tp, TARGET, mesh), shard_model(dp, DRAFT, mesh)
    assert plan["target_weights"] == bytes_per_device(tparams) and plan["draft_weights"] == bytes_per_device(dparams)
    drafter = DraftModel().bind(dcfg, mesh, plan=dplan)
    width = 64 - 16 - 3 - 2  # as the planner lays out a context of 64 for chain(3)
    spec = make_spec(tcfg, drafter, chain(3), prompt_len=width, max_new_tokens=16, max_len=64, plan=tplan)
    toks = jax.device_put(np.ones((2, width), np.int32), tplan.rows(2))
    lens = jax.device_put(np.array([5, 9], np.int32), tplan.rows(1))
    compiled = (
        jax.jit(run_speculation, static_argnames="spec")
        .lower(tparams, dparams, toks, lens, jax.random.key(0), spec=spec)
        .compile()
    )
    m = compiled.memory_analysis()
    assert (plan["arguments"], plan["temporaries"], plan["outputs"]) == (
        m.argument_size_in_bytes,
        m.temp_size_in_bytes,
        m.output_size_in_bytes,
    )
    state = compiled(tparams, dparams, toks, lens, jax.random.key(0))
    assert plan["target_cache"] == bytes_per_device((state.target_cache.k, state.target_cache.v))
    assert plan["draft_cache"] == bytes_per_device((state.draft_state.cache.k, state.draft_state.cache.v))
    assert {c["axes"] for c in plan["collectives"]} == {"layer×tp"} and P.peak_bytes(plan) > plan["target_weights"]


@pytest.mark.parametrize(
    "method, draft, options",
    [  # chain and EasySpec in the fast tier, the rest with `make test` (slow)
        ("chain", True, {}),
        ("easyspec", True, {}),
        *(
            pytest.param(m, d, o, marks=pytest.mark.slow)
            for m, d, o in (
                ("tree", True, {}),
                ("cascade", True, {}),
                ("ngram", False, {}),
                ("ls", False, {"exit_layer": 2}),
                ("fs", False, {"exit_layer": 2}),
                ("dv", False, {"exit_layer": 2}),
                ("del", False, {}),
            )
        ),
    ],
)
def test_every_method_compiles_for_a_tpu_topology(method, draft, options):
    """Readiness for the hosts the library is written for, without owning one: each method's whole
    speculative loop compiles for TPU v5e:2x2 (layer=2 × tp=2) through libtpu, the target's all-reduces
    span all 4 chips, and EasySpec's group steps gather over "layer" alone (the group [1 2 3 4] split in two
    for a layer axis of 2: two group steps, one all-gather each, in the draft's inner loop)."""
    mesh = P.mesh_on(tpu_devices("v5e:2x2"), {"layer": 2, "tp": 2})
    d = (GROUPED if method == "easyspec" else DRAFT) if draft else None
    plan = P.plan_speculative(TARGET, d, method, mesh, batch=1, context=128, options=options)
    reduces = {c["axes"] for c in plan["collectives"] if c["kind"] == "all-reduce" and c["shape"] != "pred[]"}
    assert reduces == {"layer×tp"}, plan["collectives"]
    if method == "easyspec":
        gathers = [c for c in plan["collectives"] if c["kind"] == "all-gather" and c["axes"] == "layer"]
        assert len(gathers) == 2 and {g["depth"] for g in gathers} == {2}, plan["collectives"]
    assert 0 < P.peak_bytes(plan) < 16 * 2**30


@pytest.mark.slow
def test_max_batch_bisects_on_the_compiled_bytes():
    """The largest batch that fits is the one whose compiled loop fits and whose next one does not."""
    mesh = P.mesh_on(jax.devices()[:2], {"tp": 2})
    one = P.peak_bytes(P.plan_speculative(TARGET, DRAFT, "chain", mesh, batch=1, context=64, shape={"k": 2}))
    hbm = 5.5 * one
    b = P.max_batch(TARGET, DRAFT, "chain", mesh, context=64, hbm_bytes=hbm, shape={"k": 2})
    peak = lambda n: P.peak_bytes(P.plan_speculative(TARGET, DRAFT, "chain", mesh, batch=n, context=64, shape={"k": 2}))  # noqa: E731
    assert b >= 1 and peak(b) <= hbm < peak(b + 1), b
    assert P.max_batch(TARGET, DRAFT, "chain", mesh, context=64, hbm_bytes=one / 2, shape={"k": 2}) == 0
    at = lambda c: P.peak_bytes(P.plan_speculative(TARGET, DRAFT, "chain", mesh, batch=1, context=c, shape={"k": 2}))  # noqa: E731
    c = P.max_context(TARGET, DRAFT, "chain", mesh, batch=1, hbm_bytes=at(192), step=64, shape={"k": 2})
    assert c == 192 and at(256) > at(192)


@pytest.mark.slow
def test_plan_command_report_json_and_errors(tmp_path, capsys):
    from jaxspec.cli import main

    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 96, "hidden_size": 32,
           "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2,
           "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 512,
           "tie_word_embeddings": False}  # fmt: skip
    (tmp_path / "t.json").write_text(json.dumps(cfg))
    (tmp_path / "d.json").write_text(json.dumps(cfg | {"num_hidden_layers": 2}))
    argv = ["plan", "--config", str(tmp_path / "t.json"), "--draft-config", str(tmp_path / "d.json"),
            "--cpu-devices", "4", "--mesh", "layer=2,tp=2", "--context", "128", "-k", "3"]  # fmt: skip
    assert main([*argv, "--widths", "1,16", "--json", str(tmp_path / "p.json")]) == 0
    out = capsys.readouterr().out
    assert "fits" in out and "all-reduce" in out and "over layer×tp" in out and "roofline: vanilla step" in out
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["mesh"] == {"layer": 2, "tp": 2} and doc["fits"] and doc["command"].startswith("python -m jaxspec")
    w = doc["verification_widths"]
    assert [x["width"] for x in w] == [1, 16] and w[1]["flops"] > 8 * w[0]["flops"]
    assert main([*argv, "--hbm-gib", "1e-6"]) == 0 and "DOES NOT FIT" in capsys.readouterr().out
    for bad, message in (
        (["--mesh", "layer=3,tp=2"], "mesh {'layer': 3, 'tp': 2} has 6 devices, the target devices number 4"),
        (["--cpu-devices", "64"], "--cpu-devices 64: this process has 8; set XLA_FLAGS"),
    ):
        assert main([*argv, *bad]) == 2 and message in capsys.readouterr().err
    assert main(["plan", "--preset", "gpt-5", "--cpu-devices", "2"]) == 2
    assert "unknown preset 'gpt-5': one of llama3-70b+8b" in capsys.readouterr().err
    assert main(["plan", "--preset", "llama3-70b+8b", "--topology", "v9x:2x2"]) == 2
    assert "unknown TPU topology 'v9x:2x2'" in capsys.readouterr().err


@pytest.mark.slow
def test_plan_reads_configs_from_model_files_and_plans_on_local_devices(tmp_path, capsys):
    """--model / --draft take a model's own files (config only, no weight read: `plan` never opens the
    weights); --local-devices plans on this host's own devices (here the CPU's)."""
    from jaxspec.cli import main
    from tests.helpers import hf_tiny

    hf_tiny("qwen2").save_pretrained(tmp_path / "t")
    hf_tiny("qwen2", num_hidden_layers=2).save_pretrained(tmp_path / "d")
    (tmp_path / "t" / "model.safetensors").write_bytes(b"not read")  # a plan must not touch the weights
    argv = ["plan", "--model", str(tmp_path / "t"), "--draft", str(tmp_path / "d"), "--local-devices", "2"]
    assert main([*argv, "--context", "64", "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "on 2 local cpu (compiled here), mesh {'tp': 2}" in out and "fits" in out
