"""The command line: `generate` (streamed and on-device) and `bench` with the HF baseline and its JSON
contract on the real SmolLM2-135M; every method's flags, JSON fields and user errors (one clear line,
exit 2) on a small SmolLM2-shaped model (tests/cli_model.py: same tokenizer, 8 random layers) that
compiles in a fraction of the real model's time; prompt sources."""

import json

import pytest

from jaxspec.cli import main
from jaxspec.prompts import load_prompts
from tests.cli_model import tiny_smollm_dir

# real: the tests on SmolLM2-135M's weights; assets: those on the small model (SmolLM2's tokenizer, read from
# the fetched GGUF, over random layers) or naming another fetched model's tokenizer
pytestmark = pytest.mark.xdist_group("smollm2")
MODEL = "smollm2-135m-instruct"


def _greedy_text(model: str):
    """text(n): `model`'s greedy continuation of "def add(a, b):" to n <= 13 tokens (no EOS before), from
    the library's vanilla runner (HF-identical: test_real_models, and the bench test below)."""
    import jax

    from conversion.tokenizer import eos_ids
    from jaxspec import load_model
    from jaxspec.prompts import Prompt, encode
    from jaxspec.speculative import make_runner

    m = load_model(model)
    ids = encode(m.tokenizer, Prompt("0", "def add(a, b):"))
    res = make_runner(m, None, None, max_new_tokens=13, max_len=64, eos_ids=eos_ids(m.tokenizer, m.cfg)).run(
        [ids], jax.random.key(0)
    )
    toks = res.output_ids[0]
    assert len(toks) == 13
    return lambda n: m.tokenizer.decode(toks[:n], skip_special_tokens=True)


@pytest.fixture(scope="module")
def add_greedy():
    return _greedy_text(MODEL)


@pytest.fixture(scope="module")
def tiny():
    """The small SmolLM2-shaped model's directory (8 layers: exits 1..7)."""
    return str(tiny_smollm_dir())


@pytest.fixture(scope="module")
def tiny_add_greedy(tiny):
    return _greedy_text(tiny)


@pytest.mark.real
@pytest.mark.parametrize("stream", [True, False])
def test_generate_prints_text_and_timings(capsys, stream, add_greedy):
    argv = ["generate", "--model", MODEL, "--prompt", "def add(a, b):", "--max-new-tokens", "12"]
    assert main(argv + ([] if stream else ["--no-stream"])) == 0
    out, err = capsys.readouterr()
    assert add_greedy(12).strip() and out == add_greedy(12) + "\n"  # exactly the greedy text, streamed or not
    assert "\nvanilla: 12 new tokens | compile " in err and " ms | decode " in err and " tok/s | end-to-end " in err


@pytest.mark.assets
def test_generate_on_a_mesh_that_cannot_split_the_heads(capsys, tiny_add_greedy, tiny):
    """9 heads (SmolLM2's count) at tp=2: attention replicated (said on stderr), the MLP split, output unchanged."""
    assert (
        main(
            [
                "generate",
                "--model",
                tiny,
                "--prompt",
                "def add(a, b):",
                "--max-new-tokens",
                "6",
                "--mesh",
                "tp=2",
                "--no-stream",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert "sharding: attention replicated: tp=2 does not divide the 9 query heads" in err
    assert out == tiny_add_greedy(6) + "\n"


@pytest.mark.real
def test_generate_chat_batch_with_sampling(capsys):
    assert (
        main(
            [
                "generate",
                "--model",
                MODEL,
                "--prompt",
                "Say hi.",
                "--prompt",
                "Name a colour.",
                "--chat",
                "--max-new-tokens",
                "8",
                "--temperature",
                "0.8",
                "--top-p",
                "0.9",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    out, _ = capsys.readouterr()
    assert "--- prompt 0 ---" in out and "--- prompt 1 ---" in out


@pytest.mark.real
def test_bench_json_contract_with_hf_baseline(tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "def fib(n):"}\n{"prompt": "The capital of France is", "id": "fr"}\n')
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "bench",
                "--model",
                MODEL,
                "--prompts",
                str(prompts),
                "--max-new-tokens",
                "16",
                "--json",
                str(out),
                "--hf-baseline",
                "--attention",
                "fused",
            ]
        )
        == 0
    )  # jax.nn.dot_product_attention (XLA's, on CPU)
    r = json.loads(out.read_text())
    assert [p["id"] for p in r["prompts"]] == ["0", "fr"]
    for p in r["prompts"]:
        assert {"id", "new_tokens", "tok_per_s", "output_ids", "hf_identical", "hf_tok_per_s"} <= set(p)
        assert p["new_tokens"] == len(p["output_ids"]) > 0
        assert p["tok_per_s"] == pytest.approx(p["new_tokens"] / (p["prefill_s"] + p["decode_s"]))  # the HF span
    s = r["summary"]
    tot = s["total"]
    assert tot["prefill_s"] == pytest.approx(sum(p["prefill_s"] for p in r["prompts"])) == s["prefill_s"]
    assert tot["wall_s"] == pytest.approx(tot["prefill_s"] + sum(p["decode_s"] for p in r["prompts"]))
    assert s["tok_per_s"] == pytest.approx(tot["new_tokens"] / tot["wall_s"])
    assert {
        "model",
        "method",
        "tok_per_s",
        "compile_s",
        "prefill_s",
        "total",
        "hf_tok_per_s",
        "speedup_vs_hf",
        "hf_identical",
    } <= set(s)
    assert s["method"] == "vanilla" and s["model"] == MODEL and s["attention"] == "fused"
    assert s["hf_identical"] == 2  # fp32 greedy: the same tokens as HF torch
    assert s["total"]["new_tokens"] == sum(p["new_tokens"] for p in r["prompts"])
    assert "wrote" in capsys.readouterr().out


@pytest.mark.real
def test_user_errors_exit_2_with_one_line(capsys, tmp_path):
    assert main(["generate", "--model", "no-such-model", "--prompt", "x"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    assert main(["generate", "--model", MODEL, "--prompt", "x", "--max-new-tokens", "9000"]) == 2
    assert "prompt too long" in capsys.readouterr().err
    assert main(["bench", "--model", MODEL, "--prompts", "spec-bench:nope", "--json", str(tmp_path / "x.json")]) == 2
    assert "unknown Spec-Bench category 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_prompt_sources(tmp_path):
    assert len(load_prompts("humaneval")) == 164
    chat, body, raw = (load_prompts(f, limit=1)[0] for f in ("humaneval", "humaneval-body", "humaneval-raw"))
    assert raw.text.startswith("from typing import List") and not raw.chat
    assert chat.chat and chat.text.startswith("Complete the following Python function:") and raw.text in chat.text
    assert body.chat and body.assistant_prefix == "```python\n" + raw.text and chat.assistant_prefix is None
    coding = load_prompts("spec-bench:coding")
    assert len(coding) == 10 and {p.category for p in coding} == {"coding"}
    assert len(load_prompts("spec-bench", limit=5, offset=100)) == 5
    mixed = load_prompts("spec-bench:mixed")
    assert len(mixed) == 480 and len({p.category for p in mixed[:13]}) == 13  # one of each category first
    assert sorted(p.id for p in mixed) == sorted(p.id for p in load_prompts("spec-bench"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt field"}\n')
    with pytest.raises(ValueError, match="line 2 has no string field 'prompt'"):
        load_prompts(str(bad))
    bad.write_text('{"prompt": "ok"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2: not valid JSON"):
        load_prompts(str(bad))
    with pytest.raises(ValueError, match="not a file"):
        load_prompts(str(tmp_path / "missing.jsonl"))


@pytest.mark.assets
def test_generate_speculative_prints_acceptance_and_speedup(capsys, tiny_add_greedy, tiny):
    # the model drafting for itself: every draft is accepted, the output equals vanilla — the target
    # tensor-parallel over 3 devices, the draft whole on each of them
    assert (
        main(
            [
                "generate",
                "--model",
                tiny,
                "--draft",
                tiny,
                "--method",
                "chain",
                "-k",
                "3",
                "--prompt",
                "def add(a, b):",
                "--max-new-tokens",
                "13",
                "--compare-vanilla",
                "--mesh",
                "tp=3",
                "--draft-sharding",
                "replicated",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert out == tiny_add_greedy(13) + "\n"
    # 13 tokens = 1 from prefill + 3 rounds of 3 drafts + 1
    assert "acceptance: 9/9 drafts accepted (100.0%), mean accepted length 4.00 tokens/round over 3 rounds" in err
    assert "identical outputs 1/1" in err and "speedup" in err


@pytest.mark.assets
def test_generate_speculative_timing_mode_splits_draft_and_verify(capsys, tiny):
    assert (
        main(
            [
                "generate",
                "--model",
                tiny,
                "--draft",
                tiny,
                "--method",
                "chain",
                "-k",
                "2",
                "--prompt",
                "def add(a, b):",
                "--max-new-tokens",
                "7",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "time split: drafting" in err and "mean accepted length 3.00" in err


@pytest.mark.assets
def test_bench_speculative_json_with_vanilla_and_hf_assisted(tmp_path, capsys, tiny):
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "bench",
                "--model",
                tiny,
                "--draft",
                tiny,
                "--method",
                "tree",
                "--depth",
                "3",
                "--width",
                "2",
                "--prompts",
                "humaneval-body",
                "--limit",
                "2",
                "--max-new-tokens",
                "12",
                "--json",
                str(out),
                "--compare-vanilla",
                "--hf-baseline",
                "--timing",
            ]
        )
        == 0
    )
    r = json.loads(out.read_text())
    s = r["summary"]
    assert s["method"] == "tree" and s["method_config"]["shape"] == {"depth": 3, "width": 2}
    assert (s["dtype"], s["precision"], s["cache_dtype"]) == ("float32", "highest", "float32")
    assert s["draft_sharding"] is None  # no mesh
    assert s["vanilla_identical"] == 2 and s["hf_identical"] == 2 and s["hf_method"] == "assisted"
    for key in (
        "vanilla_tok_per_s",
        "speedup",
        "decode_speedup",
        "acceptance_rate",
        "mean_accepted_length",
        "analytic_speedup",
        "fraction_of_analytic",
        "per_position",
        "histogram",
        "step_costs",
        "timing",
    ):
        assert key in s, key
    per = [p["stats"] for p in r["prompts"]]
    assert all(p["vanilla_identical"] for p in r["prompts"]) and min(x["rounds"] for x in per) >= 1
    for k in ("rounds", "drafted", "accepted"):  # the summary pools the prompts' own counts
        assert s[k] == sum(x[k] for x in per), k
    assert s["histogram"] == [sum(c) for c in zip(*(x["histogram"] for x in per))]
    # the model drafting for itself: the tree's greedy branch is the target's own continuation, so every
    # round accepts its whole depth (3 of 3 drafts)
    assert s["drafted"] == 3 * s["rounds"] and s["accepted"] == s["drafted"] and s["acceptance_rate"] == 1.0
    assert s["histogram"] == [0, 0, 0, s["rounds"]] and s["per_position"] == [1.0, 1.0, 1.0]


@pytest.mark.assets
def test_bench_easyspec_on_a_layer_and_tp_mesh(tmp_path, capsys, tiny):
    """The model drafted by its own layer-parallel self (groups of 4 split to the layer axis of 2), the target
    tensor-parallel over tp=3: output identical to vanilla, the easyspec summary in the JSON."""
    out = tmp_path / "e.json"
    assert (
        main(
            [
                "bench",
                "--model",
                tiny,
                "--draft",
                tiny,
                "--method",
                "easyspec",
                "--depth",
                "3",
                "--width",
                "2",
                "--parallel",
                "4",
                "--calibration",
                "every_mismatch",
                "--mesh",
                "layer=2,tp=3",
                "--prompts",
                "humaneval-body",
                "--limit",
                "2",
                "--max-new-tokens",
                "12",
                "--json",
                str(out),
                "--compare-vanilla",
            ]
        )
        == 0
    )
    s = json.loads(out.read_text())["summary"]
    assert s["vanilla_identical"] == 2 and s["mesh"] == {"layer": 2, "tp": 3} and s["draft_sharding"] == "replicated"
    e = s["easyspec"]
    assert e["policy"] == "attn_only" and e["calibration"] == "every_mismatch" and e["path"] == "shard_map over layer=2"
    assert e["partition"][:3] == [[0], [1, 2], [3, 4]] and e["partition"][-1] == [7]
    assert 0 < s["accepted"] <= s["drafted"] == 3 * s["rounds"]


@pytest.mark.assets
def test_speculative_user_errors(capsys, tiny):
    assert main(["generate", "--model", tiny, "--method", "chain", "--prompt", "x"]) == 2
    assert "--method chain needs --draft NAME" in capsys.readouterr().err
    assert (
        main(
            [
                "generate",
                "--model",
                tiny,
                "--draft",
                "qwen2.5-coder-0.5b-instruct",
                "--method",
                "chain",
                "--prompt",
                "x",
            ]
        )
        == 2
    )
    assert "vocab mismatch: the target has 49152 token ids, the draft 151936" in capsys.readouterr().err
    assert (
        main(["generate", "--model", tiny, "--draft", tiny, "--method", "tree", "--width", "0", "--prompt", "x"]) == 2
    )
    assert "tree depth and width must be >= 1" in capsys.readouterr().err
    assert (
        main(["generate", "--model", tiny, "--draft", tiny, "--method", "easyspec", "--parallel", "0", "--prompt", "x"])
        == 2
    )
    assert "invalid layer groups: parallel size must be >= 1, got 0" in capsys.readouterr().err
    for argv, msg in [
        (["--method", "ls", "--exit-layer", "4", "--draft-sharding", "replicated"], "has none"),
        (["--draft", tiny, "--method", "easyspec", "--draft-sharding", "tp"], "it is replicated"),
    ]:
        assert main(["generate", "--model", tiny, "--prompt", "x", *argv]) == 2
        assert msg in capsys.readouterr().err


@pytest.mark.assets
def test_bench_layerskip_on_a_tp_mesh_with_hf_early_exit(tmp_path, capsys, tiny):
    """The model drafting with its own first 5 of 8 layers, tensor-parallel over tp=3 (the self-drafter
    shares the target's plan and cache): identical to vanilla, the layerskip summary and HF's
    assistant_early_exit baseline in the JSON."""
    out = tmp_path / "ls.json"
    assert (
        main(
            [
                "bench",
                "--model",
                tiny,
                "--method",
                "ls",
                "--exit-layer",
                "5",
                "-k",
                "3",
                "--mesh",
                "tp=3",
                "--prompts",
                "humaneval-body",
                "--limit",
                "2",
                "--max-new-tokens",
                "12",
                "--json",
                str(out),
                "--compare-vanilla",
                "--hf-baseline",
            ]
        )
        == 0
    )
    s = json.loads(out.read_text())["summary"]
    assert (
        s["vanilla_identical"] == 2
        and s["draft"] is None
        and s["layerskip"] == {"exit_layer": 5, "layers": 8, "draft_vocab": None}
    )
    assert s["hf_method"] == "assistant_early_exit=5" and s["hf_identical"] == 2
    assert 0 <= s["accepted"] <= s["drafted"] == 3 * s["rounds"]
    # the analytic speedup's inputs: LayerSkip's own draft forwards beside the target's, at the mid-run context
    c = s["step_costs"]
    assert set(c) == {"context", "target_step_s", "verify_s", "draft_first_s", "draft_step_s"}
    prompt_tokens = [p["prompt_tokens"] for p in json.loads(out.read_text())["prompts"]]
    assert c["context"] == int(sum(prompt_tokens) / len(prompt_tokens)) + 12 // 2
    rnd = (c["draft_first_s"] + max(s["mean_drafted_depth"] - 1, 0) * c["draft_step_s"] + c["verify_s"]) / c[
        "target_step_s"
    ]
    assert s["round_cost_in_target_steps"] == pytest.approx(rnd)
    assert s["analytic_speedup"] == pytest.approx(s["mean_accepted_length"] / rnd)
    assert s["draft_cost_ratio"] == pytest.approx(c["draft_step_s"] / c["target_step_s"])


@pytest.mark.assets
def test_layerskip_user_errors(capsys, tiny):
    assert (
        main(["generate", "--model", tiny, "--method", "ls", "--exit-layer", "3", "--draft", tiny, "--prompt", "x"])
        == 2
    )
    assert "--method ls drafts with the model's own first layers: drop --draft" in capsys.readouterr().err
    assert main(["generate", "--model", tiny, "--method", "ls", "--prompt", "x"]) == 2
    assert "--method ls needs --exit-layer E" in capsys.readouterr().err
    assert main(["generate", "--model", tiny, "--method", "ls", "--exit-layer", "8", "--prompt", "x"]) == 2
    assert "exit layer 8 is outside 1..7" in capsys.readouterr().err


@pytest.mark.assets
def test_generate_draft_verify(capsys, tiny):
    assert (
        main(
            [
                "generate",
                "--model",
                tiny,
                "--method",
                "dv",
                "--exit-layer",
                "6",
                "-k",
                "10",
                "--prompt",
                "def add(a, b):",
                "--max-new-tokens",
                "16",
                "--compare-vanilla",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "dv: the first 6 of 8 layers draft" in err and "identical outputs 1/1" in err


@pytest.mark.assets
def test_bench_del_json_with_exit_and_tau_traces(tmp_path, capsys, tiny):
    """DEL over three candidate exits: identical to vanilla; the JSON carries its settings,
    the share of rounds each exit (or a plain step) was in effect, and per prompt the per-round traces."""
    out = tmp_path / "del.json"
    assert (
        main(
            [
                "bench",
                "--model",
                tiny,
                "--method",
                "del",
                "--exits",
                "4,6,7",
                "-k",
                "6",
                "--prompts",
                "humaneval-body",
                "--limit",
                "2",
                "--max-new-tokens",
                "12",
                "--json",
                str(out),
                "--compare-vanilla",
                "--probe",
                "4",
                "--probe-exits",
                "1",
                "--context",
                "5",
                "--cost",
                "layers",
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    s = res["summary"]
    assert s["vanilla_identical"] == 2 and s["del"]["exits"] == [4, 6, 7] and not s["del"]["faithful"]
    assert (s["del"]["probe"], s["del"]["probe_exits"], s["del"]["context"]) == (4, 1, 5)
    assert set(s["exit_layers"]["share"]) <= {"0", "4", "6", "7"}
    assert sum(s["exit_layers"]["share"].values()) == pytest.approx(1.0)
    for row in res["prompts"]:
        tr = row["drafter"]
        assert len(tr["exit_layer"]) == len(tr["tau"]) == row["stats"]["rounds"]
        assert all(e == 0 or d >= 1 for e, d in zip(tr["exit_layer"], tr["drafted"]))  # 0: a plain step
    assert "exits " in capsys.readouterr().out


@pytest.mark.assets
def test_generate_del_with_the_round_cost_measured_then_read(capsys, tmp_path, monkeypatch, tiny):
    """The default cost model: timed on this machine the first time (the log line says where it is
    kept), read from there the second."""
    from jaxspec.selfspec import round_cost

    monkeypatch.setattr(round_cost, "cost_path", lambda key: tmp_path / f"{key['max_len']}.json")
    argv = [
        "generate",
        "--model",
        tiny,
        "--method",
        "del",
        "--exits",
        "6,7",
        "-k",
        "4",
        "--prompt",
        "def add(a, b):",
        "--max-new-tokens",
        "12",
        "--compare-vanilla",
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "del: round cost measured on this machine (plain step " in err and "of [6, 7]" in err
    assert "DEL round cost measured in" in err and str(tmp_path) in err and "identical outputs 1/1" in err
    assert main(argv) == 0
    assert "DEL round cost read from" in capsys.readouterr().err


@pytest.mark.assets
def test_generate_fs(capsys, tiny):
    assert (
        main(
            [
                "generate",
                "--model",
                tiny,
                "--method",
                "fs",
                "--exit-layer",
                "7",
                "-k",
                "2",
                "--prompt",
                "def add(a, b):",
                "--max-new-tokens",
                "16",
                "--compare-vanilla",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "fs: the first 7 of 8 layers draft" in err and "identical outputs 1/1" in err


@pytest.mark.assets
def test_del_user_errors(capsys, tiny):
    cases = [
        (["--method", "del", "--draft", tiny], "--method del drafts with the model's own first layers"),
        (["--method", "del", "--exit-layer", "4"], "--method del chooses its exit layer itself"),
        (["--method", "ls", "--exit-layer", "4", "--faithful"], "--faithful is a DEL option"),
        (["--method", "chain", "--draft", tiny, "--exits", "3,4"], "--exits is a DEL option"),
        (["--method", "del", "--exits", "3,x"], "comma-separated layer counts"),
        (["--method", "del", "--exits", "4,3"], "strictly increasing"),
        (["--method", "del", "--exits", "3,8"], "outside 1..7"),
        (["--method", "ls", "--exit-layer", "4", "--probe", "4"], "--probe is a DEL option"),
        (["--method", "ls", "--exit-layer", "4", "--probe-exits", "0"], "--probe-exits is a DEL option"),
        (["--method", "del", "--probe-exits", "-1"], "probe_exits"),
        (["--method", "del", "--probe", "0"], "probe (rounds between statistics while decoding plainly) must be >= 1"),
        (["--method", "del", "--context", "-1"], "context and head_cost must be >= 0"),
        (["--method", "ls", "--exit-layer", "4", "--cost", "measured"], "--cost is a DEL option"),
        (["--method", "del", "--cost", "measured", "--head-cost", "3"], "head_cost is part of a measured round cost"),
        (["--method", "ls", "--exit-layer", "4", "--remeasure-cost"], "--remeasure-cost is a DEL option"),
        (["--method", "del", "--cost", "layers", "--remeasure-cost"], "remeasure times a measured round cost"),
        (["--method", "fs", "--exit-layer", "4", "-k", "-1"], "-k must be >= 0"),
        (["--method", "dv", "--exit-layer", "4", "-k", "0"], "-k must be >= 1"),
    ]
    for args, msg in cases:
        assert main(["generate", "--model", tiny, "--prompt", "x", "--max-new-tokens", "2", *args]) == 2, args
        assert msg in capsys.readouterr().err, args


@pytest.mark.assets
def test_bench_ngram_json_with_hf_prompt_lookup(tmp_path, capsys, tiny):
    """Prompt lookup with no draft model: identical to vanilla and to HF's own prompt lookup
    (prompt_lookup_num_tokens = -k, max_matching_ngram_size = --max-ngram); its settings in the JSON."""
    out = tmp_path / "ngram.json"
    assert (
        main(
            [
                "bench",
                "--model",
                tiny,
                "--method",
                "ngram",
                "-k",
                "3",
                "--max-ngram",
                "2",
                "--prompts",
                "humaneval-body",
                "--limit",
                "2",
                "--max-new-tokens",
                "16",
                "--json",
                str(out),
                "--compare-vanilla",
                "--hf-baseline",
            ]
        )
        == 0
    )
    s = json.loads(out.read_text())["summary"]
    assert s["vanilla_identical"] == 2 and s["draft"] is None and s["ngram"] == {"max_ngram": 2, "min_ngram": 2}
    assert s["hf_method"] == "prompt_lookup_num_tokens=3, max_matching_ngram_size=2" and s["hf_identical"] == 2
    assert s["drafted"] <= 3 * s["rounds"] and s["accepted"] <= s["drafted"]
    assert "mean accepted length" in capsys.readouterr().out


@pytest.mark.assets
def test_bench_full_width_verification(tmp_path, capsys, tiny):
    """--full-width turns the width buckets off: the same outputs, rounds and acceptance as the bucketed
    default (buckets change only how wide verification computes), `narrow` false in the JSON's method."""
    summaries = {}
    for flag in ([], ["--full-width"]):
        out = tmp_path / f"ngram{len(flag)}.json"
        assert (
            main(
                [
                    "bench",
                    "--model",
                    tiny,
                    "--method",
                    "ngram",
                    "-k",
                    "3",
                    "--prompts",
                    "humaneval-body",
                    "--limit",
                    "2",
                    "--max-new-tokens",
                    "16",
                    "--json",
                    str(out),
                    "--compare-vanilla",
                    *flag,
                ]
            )
            == 0
        )
        summaries[bool(flag)] = json.loads(out.read_text())["summary"]
    narrow, full = summaries[False], summaries[True]
    assert narrow["method_config"]["narrow"] is True and full["method_config"]["narrow"] is False
    assert narrow["vanilla_identical"] == full["vanilla_identical"] == 2
    assert [narrow[k] for k in ("rounds", "drafted", "accepted")] == [
        full[k] for k in ("rounds", "drafted", "accepted")
    ]


@pytest.mark.assets
def test_ngram_user_errors(capsys, tiny):
    cases = [
        (["--method", "ngram", "--draft", tiny], "--method ngram drafts from the prompt and output"),
        (["--method", "chain", "--draft", tiny, "--max-ngram", "2"], "--max-ngram is an ngram / cascade option"),
        (["--method", "ngram", "--min-ngram", "0"], "min_ngram must be an integer >= 1"),
        (["--method", "ngram", "--max-ngram", "1", "--min-ngram", "2"], "max_ngram (1) must be >= min_ngram (2)"),
        (["--method", "ngram", "--draft-sharding", "tp"], "--draft-sharding is for a draft model"),
        (["--method", "ngram", "--adaptive"], "not a tree or an adaptive chain"),
        (["--method", "tree", "--draft", tiny, "--full-width"], "verifies a tree's whole block every round"),
        (["--full-width"], "full-width verification is a chain's setting (its width buckets): --method vanilla"),
    ]
    for args, msg in cases:
        assert main(["generate", "--model", tiny, "--prompt", "x", "--max-new-tokens", "2", *args]) == 2, args
        assert msg in capsys.readouterr().err, args


@pytest.mark.assets
def test_bench_cascade_json(tmp_path, capsys, tiny):
    """Prompt lookup in front of the model drafting for itself, both modes: identical to vanilla; the JSON has
    the cascade's settings and how many rounds each stage served (they add up to the rounds)."""
    for extra, mode in (([], "switch"), (["--cascade-extend"], "extend")):
        out = tmp_path / f"cascade_{mode}.json"
        assert (
            main(
                [
                    "bench",
                    "--model",
                    tiny,
                    "--draft",
                    tiny,
                    "--method",
                    "cascade",
                    "-k",
                    "3",
                    "--min-match",
                    "2",
                    "--prompts",
                    "humaneval-body",
                    "--limit",
                    "2",
                    "--max-new-tokens",
                    "16",
                    "--json",
                    str(out),
                    "--compare-vanilla",
                    *extra,
                ]
            )
            == 0
        )
        s = json.loads(out.read_text())["summary"]
        assert s["vanilla_identical"] == 2
        assert s["cascade"] == {
            "mode": mode,
            "max_ngram": 3,
            "min_ngram": 2,
            "min_match": 2,
            "catchup": 0,
            "draft_vocab": None,
        }
        st = s["cascade_stages"]
        assert st["ngram_rounds"] + st["model_rounds"] == s["rounds"] and st["model_passes"] > 0, (st, s["rounds"])


@pytest.mark.assets
def test_bench_cascade_with_a_self_drafter_json(tmp_path, capsys, tiny):
    """No draft model: prompt lookup in front of the model's first 6 layers; identical to vanilla, the JSON
    names the exit and both stages' rounds."""
    out = tmp_path / "cascade_ls.json"
    assert (
        main(
            [
                "bench",
                "--model",
                tiny,
                "--method",
                "cascade",
                "--exit-layer",
                "6",
                "-k",
                "3",
                "--prompts",
                "humaneval-body",
                "--limit",
                "2",
                "--max-new-tokens",
                "16",
                "--json",
                str(out),
                "--compare-vanilla",
            ]
        )
        == 0
    )
    s = json.loads(out.read_text())["summary"]
    assert s["vanilla_identical"] == 2 and s["draft"] is None
    assert s["cascade"] == {
        "mode": "switch",
        "max_ngram": 3,
        "min_ngram": 2,
        "min_match": 1,
        "catchup": 0,
        "exit_layer": 6,
        "layers": 8,
        "draft_vocab": None,
    }
    st = s["cascade_stages"]
    assert st["ngram_rounds"] + st["model_rounds"] == s["rounds"] and st["catchup_passes"] == 0, (st, s["rounds"])


@pytest.mark.assets
def test_cascade_user_errors(capsys, tiny):
    casc = ["--method", "cascade", "--draft", tiny]
    cases = [
        (["--method", "cascade"], "falls back on a draft model (--draft NAME) or on the model's own first layers"),
        ([*casc, "--exit-layer", "4"], "give one of the two"),
        (["--method", "cascade", "--exit-layer", "4", "--cascade-extend"], "--cascade-extend continues"),
        (["--method", "cascade", "--exit-layer", "4", "--draft-sharding", "tp"], "--draft-sharding is for a draft"),
        (["--method", "cascade", "--exit-layer", "8"], "exit layer 8 is outside 1..7"),
        (
            ["--method", "chain", "--draft", tiny, "--exit-layer", "4"],
            "--exit-layer is an ls / fs / dv / cascade option",
        ),
        (["--method", "chain", "--draft", tiny, "--min-match", "2"], "--min-match is a cascade option"),
        (["--method", "ngram", "--cascade-extend"], "--cascade-extend is a cascade option"),
        ([*casc, "--min-match", "0"], "min_match must be an integer >= 1"),
        ([*casc, "-k", "2", "--min-match", "3"], "min_match (3) exceeds the chain's k (2)"),
        ([*casc, "--adaptive"], "not a tree or an adaptive chain"),
    ]
    for args, msg in cases:
        assert main(["generate", "--model", tiny, "--prompt", "x", "--max-new-tokens", "2", *args]) == 2, args
        assert msg in capsys.readouterr().err, args


def _smollm_frequencies(path):
    """A frequency file for SmolLM2's tokenizer: its greedy continuation of a prompt, counted."""
    from conversion.loader import load_model_tokenizer
    from jaxspec.speculative.hot_vocab import count_tokens, write_frequencies

    tok = load_model_tokenizer(MODEL)
    ids = tok.encode("def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n")
    return write_frequencies(path, count_tokens([ids]), tok, 49152, {"test": True})


@pytest.mark.assets
def test_bench_chain_with_a_hot_vocabulary_draft_head(tmp_path, capsys, tiny):
    """The model drafting for itself with its head trimmed to 8192 tokens: identical to vanilla (and HF), the
    draft vocabulary in the JSON; drafts the full head would accept and the trimmed one cannot propose
    are the only losses (acceptance < 1 unless every token is in the subset)."""
    freq = tmp_path / "smollm2.json"
    _smollm_frequencies(freq)
    out = tmp_path / "hv.json"
    assert (
        main(
            [
                "bench",
                "--model",
                tiny,
                "--draft",
                tiny,
                "--method",
                "chain",
                "-k",
                "3",
                "--draft-vocab",
                "8192",
                "--draft-vocab-file",
                str(freq),
                "--prompts",
                "humaneval-body",
                "--limit",
                "2",
                "--max-new-tokens",
                "12",
                "--json",
                str(out),
                "--compare-vanilla",
            ]
        )
        == 0
    )
    s = json.loads(out.read_text())["summary"]
    assert s["vanilla_identical"] == 2
    assert s["draft_vocab"] == {"size": 8192, "vocab_size": 49152, "file": "smollm2.json"}
    assert s["draftmodel"] == {"draft_vocab": s["draft_vocab"]}
    assert 0 < s["accepted"] <= s["drafted"]


@pytest.mark.assets
def test_bench_self_drafters_with_a_hot_vocabulary_draft_head(tmp_path, capsys, tiny):
    """LayerSkip and DEL drafting through the model's own head cut to 8192 tokens: identical to vanilla,
    the draft vocabulary in the JSON (and in DEL's settings), drafts made."""
    freq = tmp_path / "smollm2.json"
    _smollm_frequencies(freq)
    want = {"size": 8192, "vocab_size": 49152, "file": "smollm2.json"}
    for name, extra in (("ls", ["--exit-layer", "6"]), ("del", ["--exits", "4,6,7", "--faithful"])):
        out = tmp_path / f"{name}.json"
        assert (
            main(
                [
                    "bench",
                    "--model",
                    tiny,
                    "--method",
                    name,
                    *extra,
                    "-k",
                    "4",
                    "--draft-vocab",
                    "8192",
                    "--draft-vocab-file",
                    str(freq),
                    "--prompts",
                    "humaneval-body",
                    "--limit",
                    "2",
                    "--max-new-tokens",
                    "12",
                    "--json",
                    str(out),
                    "--compare-vanilla",
                ]
            )
            == 0
        ), name
        s = json.loads(out.read_text())["summary"]
        assert s["vanilla_identical"] == 2 and s["draft_vocab"] == want and s["drafted"] > 0, (name, s)
        if name == "del":
            assert s["del"]["draft_vocab"] == want


@pytest.mark.assets
def test_hot_vocabulary_user_errors(capsys, tmp_path, tiny):
    freq = tmp_path / "smollm2.json"
    _smollm_frequencies(freq)
    qwen = tmp_path / "qwen.json"
    from conversion.loader import load_model_tokenizer
    from jaxspec.speculative.hot_vocab import write_frequencies

    write_frequencies(qwen, {1: 1}, load_model_tokenizer("qwen2.5-coder-0.5b-instruct"), 151936, {})
    chain = ["--method", "chain", "--draft", tiny]
    cases = [
        (["--method", "ngram", "--draft-vocab", "10"], "--draft-vocab trims a draft's LM head"),
        (["--draft-vocab", "10"], "--method vanilla has none"),
        (["--method", "del", "--draft-vocab", "50000", "--draft-vocab-file", str(freq)], "must be in 1..49152"),
        ([*chain, "--draft-vocab", "0"], "--draft-vocab must be >= 1"),
        ([*chain, "--draft-vocab-file", str(freq)], "--draft-vocab-file needs --draft-vocab N"),
        ([*chain, "--draft-vocab", "50000", "--draft-vocab-file", str(freq)], "must be in 1..49152"),
        ([*chain, "--draft-vocab", "100", "--draft-vocab-file", str(qwen)], "made for another tokenizer"),
        ([*chain, "--draft-vocab", "100"], "no hot-vocabulary frequency file for this tokenizer"),
    ]
    for args, msg in cases:
        assert main(["generate", "--model", tiny, "--prompt", "x", "--max-new-tokens", "2", *args]) == 2, args
        assert msg in capsys.readouterr().err, args
