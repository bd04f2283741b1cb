"""The command line's self-drafters: `--method ls / dv / del / fs` — flags, JSON fields (DEL's exit and τ
traces, its measured round cost) and user errors — on the small SmolLM2-shaped model (tests/cli_model.py:
8 random layers, exits 1..7)."""

import json

import pytest

from jaxspec.cli import main

pytestmark = pytest.mark.xdist_group("smollm2")  # one worker: the small model's conversion and programs are shared


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
