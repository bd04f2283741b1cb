"""The command line with a draft model or prompt lookup: `--method chain / tree / easyspec / ngram / cascade`
— flags, JSON fields, the timing mode and user errors (one clear line, exit 2) — on the small SmolLM2-shaped
model (tests/cli_model.py), which compiles in a fraction of the real model's time."""

import json

import pytest

from jaxspec.cli import main

pytestmark = pytest.mark.xdist_group("smollm2")  # one worker: the small model's conversion and programs are shared


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
    tensor-parallel over layer × tp (its 9 heads over tp=3, its MLP over layer=2, its vocabulary over all 6): output
    identical to vanilla, the easyspec summary and the bytes each device holds in the JSON (the draft whole,
    the target a third or less of it)."""
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
    assert s["sharding_notes"] == [
        "attention split over tp=3 only: layer×tp=6 does not divide the 9 query heads",
        "MLP split over layer=2 only: layer×tp=6 does not divide the MLP width 128",
    ]
    b = s["bytes_per_device"]
    assert b["devices"] == 6 and 0 < b["target_weights"] <= b["draft_weights"] / 3 and b["state"] > 0
    assert b["peak"] >= b["target_weights"] + b["draft_weights"] + b["state"]


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
        "min_match": 3,  # the default, min(3, -k)
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
