"""Shared by the EasySpec experiments: the model pair, the prompt sets, and each prompt's greedy target
continuation (generated once, batched, without stop tokens, and cached under experiments/results/continuations/,
which the lookup and hot-vocabulary replays read too)."""

from __future__ import annotations

import hashlib
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common.paths import CONTINUATIONS, results_dir
from experiments.common.results import log

RESULTS = results_dir("easyspec")
TARGET, DRAFT = "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"


def load_pair(mesh=None):
    from conversion.loader import load_model

    target = load_model(TARGET, mesh=mesh)
    draft = load_model(DRAFT, mesh=mesh, replicated=True)
    return target, draft


def prompt_ids(source: str, limit: int, tokenizer) -> tuple[list[str], list[list[int]]]:
    from jaxspec.prompts import encode, load_prompts

    prompts = load_prompts(source, limit)
    return [p.id for p in prompts], [encode(tokenizer, p) for p in prompts]


def padded(ids: list[list[int]]) -> tuple[jax.Array, jax.Array]:
    from jaxspec.decode import prompt_width

    width = prompt_width(max(map(len, ids)))
    toks = np.zeros((len(ids), width), np.int32)
    for i, p in enumerate(ids):
        toks[i, : len(p)] = p
    return jnp.asarray(toks), jnp.asarray([len(p) for p in ids], jnp.int32)


def continuations(target, source: str, ids: list[list[int]], length: int, batch: int = 10) -> list[list[int]]:
    """The target's greedy continuation of every prompt, `length` tokens, no stop tokens. Cached by the
    prompts' and model's identity (the same tokens whatever drafter or oracle reads them)."""
    from jaxspec.decode import DecodeSpec, bucket, generate, output_ids

    key = hashlib.sha256(json.dumps([TARGET, ids, length]).encode()).hexdigest()[:16]
    path = CONTINUATIONS / f"{source.replace(':', '-')}_{length}_{key}.json"
    if path.exists():
        return json.loads(path.read_text())["continuations"]
    out: list[list[int]] = []
    t0 = time.perf_counter()
    gen = jax.jit(generate, static_argnames=("spec",))
    for i in range(0, len(ids), batch):
        part = ids[i : i + batch]
        toks, lens = padded(part)
        spec = DecodeSpec(target.cfg, length, bucket(toks.shape[1] + length, 64), plan=target.plan)
        out += output_ids(gen(target.params, toks, lens, jax.random.key(0), spec=spec))
        log(f"continuations {source}: {len(out)}/{len(ids)} ({time.perf_counter() - t0:.0f}s)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"target": TARGET, "source": source, "length": length, "continuations": out}))
    return out
