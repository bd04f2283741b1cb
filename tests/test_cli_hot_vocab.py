"""The command line with hot-vocabulary draft heads (`--draft-vocab`): a chain and the self-drafters on the
small SmolLM2-shaped model (tests/cli_model.py), with a frequency file counted over its tokenizer; the user
errors."""

import json

import pytest

from jaxspec.cli import main
from tests.cli_model import smollm_frequencies

pytestmark = pytest.mark.xdist_group("smollm2")  # one worker: the small model's conversion and programs are shared


@pytest.mark.assets
def test_bench_chain_with_a_hot_vocabulary_draft_head(tmp_path, capsys, tiny):
    """The model drafting for itself with its head trimmed to 8192 tokens: identical to vanilla (and HF), the
    draft vocabulary in the JSON; drafts the full head would accept and the trimmed one cannot propose
    are the only losses (acceptance < 1 unless every token is in the subset)."""
    freq = tmp_path / "smollm2.json"
    smollm_frequencies(freq)
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
    smollm_frequencies(freq)
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
    smollm_frequencies(freq)
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
