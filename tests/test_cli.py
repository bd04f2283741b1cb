"""The command line's plain decoding: `generate` (streamed and on-device) and `bench` with the HF baseline and
its JSON contract on the real SmolLM2-135M, the mesh check on the small SmolLM2-shaped model
(tests/cli_model.py: same tokenizer, 8 random layers), user errors (one clear line, exit 2), prompt sources.
Each method's flags, JSON fields and errors: test_cli_speculative.py, test_cli_selfspec.py,
test_cli_hot_vocab.py."""

import json

import pytest

from jaxspec.cli import main
from jaxspec.prompts import load_prompts
from tests.cli_model import MODEL

pytestmark = pytest.mark.xdist_group("smollm2")  # one worker: the small model's conversion and programs are shared


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
