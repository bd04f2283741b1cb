"""A non-editable install works without the repository: the package data (Spec-Bench questions, the
shipped hot-vocabulary file) travels in the wheel, and nothing reads a path beside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Run in a folder of its own with the installed copy first on the path: the checkout is not importable
# there (cwd is the temporary folder; the editable install's finder comes after the path entries).
INSTALLED_RUN = textwrap.dedent("""
    import sys
    import jax, numpy as np
    import jaxspec
    assert jaxspec.__file__.startswith(sys.argv[1]), jaxspec.__file__
    from conversion.loader import load_model_tokenizer
    from jaxspec import init_params, speculate
    from jaxspec.config import ModelConfig
    from jaxspec.decode import DecodeSpec, generate, output_ids
    from jaxspec.prompts import load_prompts
    from jaxspec.speculative import DraftModel, Model
    from jaxspec.speculative.hot_vocab import find_file, load_hot_vocab

    assert len(load_prompts("spec-bench")) == 480 and len(load_prompts("spec-bench:coding")) == 10
    tok = load_model_tokenizer("qwen2.5-coder-0.5b-instruct")
    path = find_file(tok)
    assert path.is_relative_to(sys.argv[1]), path
    vocab = load_hot_vocab(path, 4096, tokenizer=tok)
    cfg = ModelConfig(arch="qwen2", vocab_size=151936, hidden_size=16, intermediate_size=32, num_layers=2,
                      num_heads=2, num_kv_heads=1, head_dim=8, rope_theta=10000.0, rms_norm_eps=1e-6,
                      qkv_bias=True, tie_embeddings=True, max_position_embeddings=256)
    t, d = (Model(init_params(jax.random.key(s), cfg), cfg) for s in (0, 1))
    ids = [tok("def add(a, b):")["input_ids"]]
    out = speculate(t, d, ids, max_new_tokens=8, drafter=DraftModel(vocab=vocab))
    ref = output_ids(generate(t.params, np.asarray(ids), np.asarray([len(ids[0])]), jax.random.key(0),
                              spec=DecodeSpec(cfg, max_new_tokens=8, max_len=64)))
    assert out.output_ids == ref, (out.output_ids, ref)
    print("installed-ok", out.stats["drafted"])
""")


def _wheel(tmp: Path) -> Path:
    """Built from a copy of the sources (an in-tree build would reuse a stale build/ folder)."""
    src = tmp / "src"
    for d in ("jaxspec", "conversion"):
        shutil.copytree(ROOT / d, src / d, ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp), str(src)],
        check=True,
        capture_output=True,
    )
    return next(tmp.glob("jaxspec-*.whl"))


def test_the_wheel_carries_the_package_data(tmp_path):
    names = set(zipfile.ZipFile(_wheel(tmp_path)).namelist())
    for f in (
        "jaxspec/data/spec_bench/question.jsonl",
        "jaxspec/data/spec_bench/LICENSE",
        "jaxspec/data/spec_bench/SOURCE.md",
        "jaxspec/data/hot_vocab/qwen2.5-coder-1.5b-instruct.json",
    ):
        assert f in names, f"{f} is not in the wheel"


@pytest.mark.real
def test_a_non_editable_install_runs_a_hot_vocabulary_generate(tmp_path):
    """`pip install .` (non-editable) into a folder of its own, then from another folder: Spec-Bench prompts load
    and a hot-vocabulary draft head (the shipped file, found for the Qwen tokenizer) generates vanilla's tokens."""
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "--target",
            str(site),
            str(_wheel(tmp_path)),
        ],
        check=True,
        capture_output=True,
    )
    run = tmp_path / "elsewhere"
    run.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    env.pop("JAXSPEC_SPEC_BENCH", None)
    r = subprocess.run(
        [sys.executable, "-c", INSTALLED_RUN, str(site)], cwd=run, env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "installed-ok" in r.stdout
