"""`python -m jaxspec bench`: run a prompt set, write per-prompt and summary JSON.

JSON contract (documented in the README; scripts outside the repo parse it):
  prompts: [{id, category, prompt_tokens, new_tokens, tok_per_s, prefill_s, decode_s, output_ids,
             hf_tok_per_s?, hf_identical?}]
  summary: {model, method, tok_per_s, decode_tok_per_s, compile_s, prefill_s, total: {...},
            hf_tok_per_s?, speedup_vs_hf?, hf_identical?, weight_bytes, read_gb_per_s, ...}
Every timing excludes compilation (done ahead of time, reported as compile_s). tok_per_s counts all
new tokens over prefill + decode time, the same span HF `generate` is timed over."""
from __future__ import annotations

import datetime
import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.decode import bucket
from jaxspec.params import param_bytes
from jaxspec.prompts import load_prompts
from jaxspec.runner import VanillaRunner


def _best_time(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure_read_bandwidth(nbytes: int = 1 << 31, repeats: int = 5) -> dict[str, float]:
    """Memory-read bandwidth (bytes/s) of this host, best of `repeats`, by two readers of a 2 GiB f32
    buffer (larger than any cache): a jitted `jnp.sum`, and numpy sums on one thread per core. The
    bound used is the faster: the most a decode step could stream."""
    x = jnp.ones((nbytes // 4,), jnp.float32)
    f = jax.jit(jnp.sum)
    out = {"jax_sum": nbytes / _best_time(lambda: jax.block_until_ready(f(x)), repeats)}
    del x
    a = np.ones(nbytes // 4, np.float32)
    chunks = np.array_split(a, os.cpu_count() or 1)
    with ThreadPoolExecutor(len(chunks)) as pool:  # numpy releases the GIL inside sum
        out["numpy_threads"] = nbytes / _best_time(lambda: list(pool.map(np.sum, chunks)), repeats)
    out["best"] = max(out.values())
    return out


def environment() -> dict:
    dev = jax.devices()[0]
    return {"jax": jax.__version__, "platform": dev.platform, "device": getattr(dev, "device_kind", str(dev)),
            "num_devices": jax.device_count(), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat()}


def encode_all(tokenizer, prompts, chat: bool) -> list[list[int]]:
    from conversion.tokenizer import encode_prompt
    return [encode_prompt(tokenizer, p.text, chat=chat) for p in prompts]


def run_bench(model, prompts_source: str, *, max_new_tokens: int, limit=None, chat=False, mesh=None,
              dtype="float32", hf_baseline=False, measure_bandwidth=False, log=print) -> dict:
    """Load `model`, run every prompt (batch 1, greedy) and return the JSON-ready result."""
    from conversion.loader import load_model
    from conversion.tokenizer import eos_ids as stop_ids

    prompts = load_prompts(prompts_source, limit)
    m = load_model(model, mesh=mesh, dtype=dtype)
    log(f"loaded {model} in {m.load_s:.1f}s ({'orbax checkpoint' if m.from_checkpoint else 'converted'})")
    ids = encode_all(m.tokenizer, prompts, chat)
    eos = stop_ids(m.tokenizer, m.cfg)
    max_len = bucket(max(len(i) for i in ids) + max_new_tokens, 64)
    runner = VanillaRunner(m.params, m.cfg, max_new_tokens=max_new_tokens, max_len=max_len, eos_ids=eos, plan=m.plan)
    compile_s = sum(runner.compile([i]) for i in ids)  # every width bucket, before any timing
    runner.warmup([[i] for i in ids])  # first runs of each executable, not timed
    log(f"compiled in {compile_s:.1f}s; running {len(prompts)} prompts")

    rows = []
    for p, pid in zip(prompts, ids):
        r = runner.run([pid])
        out = r.output_ids[0]
        rows.append({"id": p.id, "category": p.category, "prompt_tokens": len(pid), "new_tokens": len(out),
                     "tok_per_s": len(out) / r.wall_s, "prefill_s": r.prefill_s, "decode_s": r.decode_s,
                     "output_ids": out})
        log(f"  {p.id}: {len(out)} tokens, {len(out) / r.wall_s:.2f} tok/s (prefill {r.prefill_s * 1e3:.0f} ms)")

    new = sum(r["new_tokens"] for r in rows)
    prefill_s = sum(r["prefill_s"] for r in rows)
    decode_s = sum(r["decode_s"] for r in rows)
    steps = new - len(rows)  # decode steps (the first token of each prompt comes from prefill)
    wbytes = param_bytes(m.params)
    summary = {
        "model": str(model), "method": runner.method, "dtype": dtype, "mesh": dict(mesh.shape) if mesh else None,
        "max_new_tokens": max_new_tokens, "prompts_source": prompts_source, "chat": chat,
        "tok_per_s": new / (prefill_s + decode_s), "decode_tok_per_s": steps / decode_s if decode_s else None,
        "compile_s": compile_s, "prefill_s": prefill_s, "load_s": m.load_s,
        "total": {"prompts": len(rows), "new_tokens": new, "prefill_s": prefill_s, "decode_s": decode_s,
                  "wall_s": prefill_s + decode_s},
        "weight_bytes": wbytes, "read_gb_per_s": wbytes * steps / decode_s / 1e9 if decode_s else None,
    }
    if measure_bandwidth:
        bw = measure_read_bandwidth()
        summary["machine_read_gb_per_s"] = bw["best"] / 1e9
        summary["machine_read_detail_gb_per_s"] = {k: v / 1e9 for k, v in bw.items()}
        summary["bound_tok_per_s"] = bw["best"] / wbytes
        summary["fraction_of_bound"] = summary["decode_tok_per_s"] / summary["bound_tok_per_s"]
    if hf_baseline:
        _add_hf_baseline(m.source, ids, rows, summary, max_new_tokens, eos, log)
    return {"prompts": rows, "summary": summary, "env": environment()}


def _add_hf_baseline(source, ids, rows, summary, max_new_tokens, eos, log) -> None:
    from jaxspec.hf_reference import hf_generate, load_hf_model
    hf = load_hf_model(source)
    hf_generate(hf, ids[0], min(8, max_new_tokens), eos)  # warm-up, not timed
    hf_new = hf_s = 0
    for row, pid in zip(rows, ids):
        out, dt = hf_generate(hf, pid, max_new_tokens, eos)
        row["hf_tok_per_s"] = len(out) / dt
        row["hf_identical"] = out == row["output_ids"]
        hf_new, hf_s = hf_new + len(out), hf_s + dt
        log(f"  HF {row['id']}: {len(out)} tokens, {len(out) / dt:.2f} tok/s, identical={row['hf_identical']}")
    summary["hf_tok_per_s"] = hf_new / hf_s
    summary["speedup_vs_hf"] = summary["tok_per_s"] / summary["hf_tok_per_s"]
    summary["hf_identical"] = sum(r["hf_identical"] for r in rows)
    del hf


def write_json(result: dict, path) -> Path:
    """Write atomically (a temp file renamed), so a crashed run never leaves half a JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=_jsonable))
    tmp.replace(path)
    return path


def _jsonable(x):
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x)}")
