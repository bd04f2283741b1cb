"""Attention microbenchmarks behind the decoder's attention layout (jaxspec/layers.py, jaxspec/cache.py)
and the prefill window (jaxspec/model.py `forward_prompt`), fp32, batch 1:

  * one layer's attention core (scores, mask, softmax, weighted values) on Qwen-1.5B and -0.5B head
    shapes, for a decode step (T=1), a verification block (T=4, 16) and prefills, in two formulations:
    `token_major` contracts queries [B, T, Hkv, G, K] with a [B, S, Hkv, K] cache (the decoder before
    this benchmark); `heads_major` (the decoder now) lays queries out [B, Hkv, G·T, K] against a
    [B, Hkv, S, K] cache so the softmax runs over the contiguous last axis;
  * a whole-model prefill of both Qwen models into a cache of S slots, attending over all S slots
    versus only the prompt's own P (`forward_prompt`).

    python -m experiments.vanilla.bench_attention   # ~4 min on the 2-core CPU box
                                                    # → experiments/results/vanilla/attention_<tag>.json"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common.paths import results_dir
from experiments.common.results import write_json
from jaxspec.bench import environment
from jaxspec.timing import best_time

MODELS = {"1.5b": (2, 6, 128, 28), "0.5b": (2, 7, 64, 24)}  # kv heads, queries per kv head, head_dim, layers


def token_major(q, k, v, mask):
    # q: [B, T, Hkv, G, K]; k, v: [B, S, Hkv, K]; mask: bool[B, T, S]
    s = jnp.einsum("btngk,bsnk->bngts", q, k) * (q.shape[-1] ** -0.5)
    s = jnp.where(mask[:, None, None], s, -jnp.inf)
    return jnp.einsum("bngts,bsnk->btngk", jax.nn.softmax(s, axis=-1), v)


def heads_major(q, k, v, mask):
    # q: [B, T, Hkv, G, K]; k, v: [B, Hkv, S, K] — as in jaxspec.layers.attention_block
    B, T, N, G, K = q.shape
    S = k.shape[2]
    qh = jnp.transpose(q, (0, 2, 3, 1, 4)).reshape(B, N, G * T, K)
    s = jnp.einsum("bnmk,bnsk->bnms", qh, k) * (K**-0.5)
    s = jnp.where(mask[:, None, None], s.reshape(B, N, G, T, S), -jnp.inf)
    w = jax.nn.softmax(s, axis=-1).reshape(B, N, G * T, S)
    o = jnp.einsum("bnms,bnsk->bnmk", w, v)
    return jnp.transpose(o.reshape(B, N, G, T, K), (0, 3, 1, 2, 4))


def attention_core(model: str, T: int, S: int, rng) -> dict:
    N, G, K, L = MODELS[model]
    q = jnp.asarray(rng.standard_normal((1, T, N, G, K), dtype=np.float32))
    k = jnp.asarray(rng.standard_normal((1, S, N, K), dtype=np.float32))
    v = jnp.asarray(rng.standard_normal((1, S, N, K), dtype=np.float32))
    ctx = S - T if T < S else 0  # decode/verify: T new tokens after S - T cached ones; prefill: causal from 0
    mask = jnp.arange(S)[None, None, :] <= ctx + jnp.arange(T)[None, :, None]
    kh, vh = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)
    a, b = jax.jit(token_major)(q, k, v, mask), jax.jit(heads_major)(q, kh, vh, mask)
    err = float(jnp.max(jnp.abs(a - b)))
    if err > 1e-4:
        raise AssertionError(f"formulations disagree by {err}")
    reps = 20 if T <= 16 else 3
    old = best_time(jax.jit(token_major), q, k, v, mask, repeats=reps)
    new = best_time(jax.jit(heads_major), q, kh, vh, mask, repeats=reps)
    return {
        "model": model,
        "T": T,
        "S": S,
        "token_major_ms": 1e3 * old,
        "heads_major_ms": 1e3 * new,
        "per_model_ms_saved": 1e3 * (old - new) * L,
        "speedup": old / new,
        "max_abs_diff": err,
    }


def model_prefill(name: str, P: int, S: int, rng) -> dict:
    from conversion.loader import load_model
    from jaxspec.cache import init_cache
    from jaxspec.model import forward, forward_prompt

    m = load_model(name, tokenizer=False)

    @functools.partial(jax.jit, static_argnames=("window",))
    def run(params, toks, window):
        cache = init_cache(m.cfg, 1, S)
        if window:
            return forward_prompt(params, toks, jnp.full((1,), P, jnp.int32), cache, m.cfg)[0]
        return forward(params, toks, cache, m.cfg, logits_at=jnp.full((1, 1), P - 1, jnp.int32))[0]

    toks = jnp.asarray(rng.integers(0, 1000, (1, P)), jnp.int32)
    full, own = run(m.params, toks, False), run(m.params, toks, True)
    diff = float(jnp.max(jnp.abs(full - own)))
    t_full, t_own = best_time(run, m.params, toks, False, repeats=3), best_time(run, m.params, toks, True, repeats=3)
    return {
        "model": name,
        "P": P,
        "S": S,
        "all_slots_s": t_full,
        "prompt_slots_s": t_own,
        "speedup": t_full / t_own,
        "max_abs_logit_diff": diff,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tag", default="cpu")
    ap.add_argument("--out", type=Path, default=results_dir("vanilla"))
    ap.add_argument("--no-models", action="store_true", help="skip the whole-model prefills (no model files)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    core = []
    for model in MODELS:
        for T, S in ((1, 512), (1, 1024), (4, 1024), (16, 512), (16, 1024), (192, 1024), (1024, 2048)):
            core.append(attention_core(model, T, S, rng))
            r = core[-1]
            print(
                f"attention {model} T={T:5d} S={S:5d}: token-major {r['token_major_ms']:8.2f} ms, "
                f"heads-major {r['heads_major_ms']:8.2f} ms ({r['speedup']:.2f}x)",
                flush=True,
            )
    prefill = []
    if not args.no_models:
        for name, P, S in (
            ("qwen2.5-coder-1.5b-instruct", 192, 1024),
            ("qwen2.5-coder-0.5b-instruct", 192, 1024),
            ("qwen2.5-coder-0.5b-instruct", 1024, 2048),
        ):
            prefill.append(model_prefill(name, P, S, rng))
            r = prefill[-1]
            print(
                f"prefill {name} P={P} into S={S}: all slots {r['all_slots_s']:.3f} s, "
                f"own slots {r['prompt_slots_s']:.3f} s ({r['speedup']:.2f}x)",
                flush=True,
            )
    path = write_json(
        {"attention_core": core, "prefill": prefill, "env": environment()}, args.out / f"attention_{args.tag}.json"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
