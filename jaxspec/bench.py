"""`python -m jaxspec bench`: run a prompt set, write per-prompt and summary JSON.

JSON contract (documented in the README; scripts outside the repo parse it):
  prompts: [{id, category, prompt_tokens, new_tokens, tok_per_s, prefill_s, decode_s, output_ids,
             stats? (speculative: metrics.summarize), vanilla_tok_per_s?, vanilla_identical?,
             hf_tok_per_s?, hf_identical?}]
  summary: {model, draft, method, method_config, dtype, precision, cache_dtype, attention, mesh, sharding_notes,
            tok_per_s, decode_tok_per_s, compile_s, prefill_s,
            total: {prompts, new_tokens, prefill_s, decode_s, wall_s}, weight_bytes, read_gb_per_s (vanilla),
            speculative: rounds, drafted, accepted, acceptance_rate, mean_accepted_length, per_position,
                         histogram, mean_drafted_depth, step_costs, analytic_speedup, round_cost_in_target_steps,
                         timing? {draft_s, verify_s, ...} (--timing),
            --compare-vanilla: vanilla_tok_per_s, speedup, decode_speedup, vanilla_identical, fraction_of_analytic,
            --hf-baseline: hf_method (vanilla | assisted), hf_tok_per_s, speedup_vs_hf, hf_identical}
Every timing excludes compilation (done ahead of time, reported as compile_s). tok_per_s counts all
new tokens over prefill + decode time, the same span HF `generate` is timed over; decode_speedup and
fraction_of_analytic compare the decode phase only (the analytic model has no prefill)."""

from __future__ import annotations

import dataclasses
import datetime
import gc
import json
import os
import platform
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.decode import cache_slots
from jaxspec.layers import use_fused_attention
from jaxspec.params import param_bytes
from jaxspec.pooling import pooled, totals
from jaxspec.prompts import encode, load_prompts
from jaxspec.sampling import GREEDY
from jaxspec.sharding import replicated_plan
from jaxspec.timing import best_time


def measure_read_bandwidth(nbytes: int = 1 << 31, repeats: int = 5) -> dict[str, float]:
    """Memory-read bandwidth (bytes/s) of the default device, best of `repeats`, by a jitted `jnp.sum` over
    a 2 GiB f32 buffer (larger than any cache) and, on a CPU backend, numpy sums on one thread per core
    too. The bound used is the faster: the most a decode step could stream. (On a GPU only the device's
    own reader counts: the host's numpy would measure another memory.)"""
    x = jnp.ones((nbytes // 4,), jnp.float32)
    f = jax.jit(jnp.sum)
    out = {"jax_sum": nbytes / best_time(f, x, repeats=repeats)}
    del x
    if jax.default_backend() != "cpu":
        out["best"] = out["jax_sum"]
        return out
    a = np.ones(nbytes // 4, np.float32)
    chunks = np.array_split(a, os.cpu_count() or 1)
    with ThreadPoolExecutor(len(chunks)) as pool:  # numpy releases the GIL inside sum
        out["numpy_threads"] = nbytes / best_time(lambda: list(pool.map(np.sum, chunks)), repeats=repeats)
    out["best"] = max(out.values())
    return out


def environment() -> dict:
    dev = jax.devices()[0]
    return {
        "jax": jax.__version__,
        "platform": dev.platform,
        "device": getattr(dev, "device_kind", str(dev)),
        "num_devices": jax.device_count(),
        "process_count": jax.process_count(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }


def _rows(runner, prompts, ids, seed: int, log, tag: str = "") -> list[dict]:
    rows = []
    for i, (p, pid) in enumerate(zip(prompts, ids)):
        r = runner.run([pid], jax.random.key(seed + i))
        out = r.output_ids[0]
        row = {
            "id": p.id,
            "category": p.category,
            "prompt_tokens": len(pid),
            "new_tokens": len(out),
            "tok_per_s": len(out) / r.wall_s,
            "prefill_s": r.prefill_s,
            "decode_s": r.decode_s,
            "output_ids": out,
        }
        line = f"  {tag}{p.id}: {len(out)} tokens, {len(out) / r.wall_s:.2f} tok/s (prefill {r.prefill_s * 1e3:.0f} ms)"
        if r.stats is not None:
            row["stats"] = {k: v for k, v in r.stats.items() if k != "per_row"}
            line += f", mean accepted length {r.stats['mean_accepted_length']:.2f}"
        if r.drafter:
            row["drafter"] = r.drafter  # DEL: exit layer, d*, τ per round
        rows.append(row)
        log(line)
    return rows


def _exit_shares(rows: list[dict]) -> dict:
    """DEL over a prompt set: the share of rounds each exit was in effect ("0": plain decoding steps),
    the mean τ and the mean drafted length."""
    from collections import Counter

    exits = Counter(e for r in rows for e in r["drafter"]["exit_layer"])
    n = sum(exits.values())
    taus = [t for r in rows for t in r["drafter"]["tau"] if t == t]
    drafted = [d for r in rows for d in r["drafter"]["drafted"]]
    return {
        "share": {str(e): c / n for e, c in sorted(exits.items())},
        "rounds": n,
        "mean_tau": float(np.mean(taus)) if taus else None,
        "mean_drafted": float(np.mean(drafted)) if drafted else None,
    }


def stage_shares(rows: list[dict]) -> dict:
    """Cascade over a prompt set: rounds served by the lookup alone and by the draft model (extend: rounds
    with a lookup proposal to extend and without), the model's runs and catch-up forwards."""
    tot = {
        k: sum(r["drafter"]["cascade"][k] for r in rows)
        for k in ("ngram_rounds", "model_rounds", "ngram_tokens_offered", "model_passes", "catchup_passes")
    }
    n = tot["ngram_rounds"] + tot["model_rounds"]
    return {**tot, "ngram_share": tot["ngram_rounds"] / n if n else None}


def run_bench(
    model,
    prompts_source: str,
    *,
    max_new_tokens: int,
    limit=None,
    chat=False,
    mesh=None,
    dtype="float32",
    precision="highest",
    cache_dtype=None,
    attention="auto",
    method=None,
    draft=None,
    draft_replicated=False,
    sampling=GREEDY,
    seed: int = 0,
    compare_vanilla=False,
    hf_baseline=False,
    measure_bandwidth=False,
    timing=False,
    loaded=None,
    vanilla=None,
    drafter=None,
    log=print,
) -> dict:
    """Load `model` (and `draft` for a speculative `method`), run every prompt (batch 1) and return the
    JSON-ready result. See the module docstring for the fields.

    Scripts running several methods in one process pass `loaded=(target, draft)` (loaded models) and
    `vanilla=` an earlier vanilla result on the same prompts (used instead of re-running it); `drafter`
    an (unbound) `EasySpec` to draft with instead of the separate draft model (loaded replicated).
    `draft_replicated`: the draft whole on every device of `mesh` instead of tensor-parallel."""
    from conversion.loader import load_model
    from conversion.tokenizer import eos_ids as stop_ids
    from jaxspec.speculative import Cascade, DraftModel, NGram, check_vocab, make_runner, merge

    prompts = load_prompts(prompts_source, limit)
    numerics = dict(dtype=dtype, precision=precision, cache_dtype=cache_dtype, attention=attention)
    m, d = loaded if loaded is not None else (load_model(model, mesh=mesh, **numerics), None)
    log(f"loaded {model} in {m.load_s:.1f}s ({'orbax checkpoint' if m.from_checkpoint else 'converted'})")
    self_draft = drafter is not None and drafter.writes_target_cache  # drafts with the target's own layers
    if method is not None and drafter is not None and not drafter.needs_draft_model:
        if draft is not None:
            raise ValueError(f"{type(drafter).__name__} drafts without a draft model: give none")
    elif method is not None:
        if draft is None:
            raise ValueError(f"method {method.name!r} needs a draft model (--draft NAME)")
        d = (
            d
            if d is not None
            else load_model(
                draft,
                mesh=mesh,
                **numerics,
                replicated=draft_replicated or (drafter is not None and not isinstance(drafter, (DraftModel, Cascade))),
            )
        )  # EasySpec's draft: replicated
        check_vocab(m.cfg, d.cfg, m.tokenizer, d.tokenizer)
        log(f"draft {draft} loaded in {d.load_s:.1f}s")
    ids = [encode(m.tokenizer, p, chat) for p in prompts]
    eos = stop_ids(m.tokenizer, m.cfg)
    extra_slots = method.shape.nodes + 1 if method is not None else 0
    max_len = cache_slots(max(len(i) for i in ids) + max_new_tokens + extra_slots)  # one size: one compiled loop

    def prepared(meth):
        runner = make_runner(
            m,
            d,
            meth,
            max_new_tokens=max_new_tokens,
            max_len=max_len,
            sampling=sampling,
            eos_ids=eos,
            drafter=drafter if meth is not None else None,
            measure_costs=True,
        )
        compile_s = sum(runner.compile([i]) for i in ids)  # every width bucket, before any timing
        runner.warmup([[i] for i in ids])  # first runs of each executable, not timed
        return runner, compile_s

    runner, compile_s = prepared(method)
    log(f"compiled {runner.method} in {compile_s:.1f}s; running {len(prompts)} prompts")
    rows = _rows(runner, prompts, ids, seed, log)
    tot = totals(rows)
    wbytes = param_bytes(m.params)
    steps = tot["new_tokens"] - len(rows)
    summary = {
        "model": str(model),
        "draft": str(draft) if draft else None,
        "method": runner.method,
        "method_config": dataclasses.asdict(method) if method is not None else None,
        "dtype": m.cfg.dtype,
        "precision": m.cfg.precision,
        "cache_dtype": m.cfg.kv_dtype.name,
        "attention": "fused" if use_fused_attention(m.cfg) else "einsum",
        "mesh": dict(mesh.shape) if mesh else None,
        "sharding_notes": list(m.plan.notes) if m.plan else [],
        "draft_sharding": None
        if d is None or d.plan is None
        else ("replicated" if d.plan == replicated_plan(d.plan.mesh) else "tp"),
        "draft_vocab": (v.describe() if (v := runner.spec.drafter.vocab) is not None else None)
        if method is not None
        else None,
        "max_new_tokens": max_new_tokens,
        "prompts_source": prompts_source,
        "chat": chat,
        "sampling": dataclasses.asdict(sampling),
        "tok_per_s": tot["tok_per_s"],
        "decode_tok_per_s": tot["decode_tok_per_s"],
        "compile_s": compile_s,
        "prefill_s": tot["prefill_s"],
        "load_s": m.load_s,
        "total": {k: tot[k] for k in ("prompts", "new_tokens", "prefill_s", "decode_s", "wall_s")},
        "weight_bytes": wbytes,
        "bytes_per_device": runner.device_bytes(1),
    }
    if method is None:
        summary["read_gb_per_s"] = wbytes * steps / tot["decode_s"] / 1e9 if tot["decode_s"] else None
    else:
        summary.update(merge([r["stats"] for r in rows]))
        summary["mean_drafted_depth"] = summary["drafted"] / summary["rounds"] if summary["rounds"] else None
        if drafter is not None:  # "easyspec" / "layerskip": the drafter's own settings
            summary[type(drafter).__name__.lower()] = runner.spec.drafter.describe()
        if any("exit_layer" in r.get("drafter", {}) for r in rows):
            summary["exit_layers"] = _exit_shares(rows)
        if any("cascade" in r.get("drafter", {}) for r in rows):
            summary["cascade_stages"] = stage_shares(rows)
    if measure_bandwidth:
        bw = measure_read_bandwidth()
        summary["machine_read_gb_per_s"] = bw["best"] / 1e9
        summary["machine_read_detail_gb_per_s"] = {k: v / 1e9 for k, v in bw.items()}
        summary["bound_tok_per_s"] = bw["best"] / wbytes
        if method is None:
            summary["fraction_of_bound"] = summary["decode_tok_per_s"] / summary["bound_tok_per_s"]
    if method is not None and timing:
        summary["timing"] = _timing_mode(runner, ids, seed)
        log(f"timing mode: {summary['timing']}")
    if compare_vanilla or vanilla is not None:
        base = (
            vanilla["prompts"] if vanilla is not None else _rows(prepared(None)[0], prompts, ids, seed, log, "vanilla ")
        )
        add_vanilla(base, rows, summary)
    if method is not None and not runner.spec.drafter.variable_depth:  # a round's shape varies otherwise
        _add_analytic(
            m,
            d,
            runner.args[1],
            method,
            ids,
            max_new_tokens,
            max_len,
            summary,
            log,
            runner.spec.drafter if drafter is not None else None,
        )
    if hf_baseline:
        lookup = (method.shape.depth, drafter.max_ngram) if isinstance(drafter, NGram) else None
        _add_hf_baseline(
            m.source,
            d.source if d else None,
            ids,
            rows,
            summary,
            max_new_tokens,
            eos,
            log,
            runner.spec.drafter.describe().get("exit_layer") if self_draft and method is not None else None,
            lookup,
        )
    return {"prompts": rows, "summary": summary, "env": environment()}


def _timing_mode(runner, ids, seed, limit: int = 5) -> dict:
    """One host sync per round: drafting and verification timed apart (totals over the first `limit`
    prompts: the split, not the throughput, is what this pass measures)."""
    draft_s = verify_s = 0.0
    rounds = 0
    for i, pid in enumerate(ids[:limit]):
        for _, res in runner.stream([pid], jax.random.key(seed + i)):
            pass
        draft_s, verify_s, rounds = draft_s + res.draft_s, verify_s + res.verify_s, rounds + res.stats["rounds"]
    return {
        "prompts": min(limit, len(ids)),
        "draft_s": draft_s,
        "verify_s": verify_s,
        "rounds": rounds,
        "draft_ms_per_round": 1e3 * draft_s / rounds,
        "verify_ms_per_round": 1e3 * verify_s / rounds,
        "draft_fraction": draft_s / (draft_s + verify_s),
    }


def add_vanilla(base: list[dict], rows: list[dict], summary: dict) -> None:
    if [b["id"] for b in base] != [r["id"] for r in rows]:
        raise ValueError("the vanilla baseline ran other prompts")
    for row, b in zip(rows, base):
        row["vanilla_tok_per_s"] = b["tok_per_s"]
        row["vanilla_identical"] = b["output_ids"] == row["output_ids"]
    tot, p = totals(base), pooled(rows, base)
    summary["vanilla_tok_per_s"] = tot["tok_per_s"]
    summary["vanilla_decode_tok_per_s"] = tot["decode_tok_per_s"]
    summary["vanilla_prefill_s"] = tot["prefill_s"]
    for k in ("speedup", "decode_speedup", "speedup_ci", "decode_speedup_ci"):  # jaxspec/pooling.py
        summary[k] = p[k]
    summary["vanilla_identical"] = sum(r["vanilla_identical"] for r in rows)


def _add_analytic(m, d, draft_params, method, ids, max_new_tokens, max_len, summary, log, drafter=None) -> None:
    """`draft_params`: as the runner's drafter prepared them (EasySpec's stacked groups made once, not again)."""
    from jaxspec.speculative.costs import analytic_speedup, step_costs

    context = int(np.mean([len(i) for i in ids])) + max_new_tokens // 2  # a typical cache fill mid-generation
    costs = step_costs(
        m.params, m.cfg, draft_params, (d or m).cfg, method.shape, context=context, max_len=max_len, drafter=drafter
    )
    summary["step_costs"] = costs
    summary.update(analytic_speedup(costs, summary["mean_accepted_length"], summary["mean_drafted_depth"]))
    if "decode_speedup" in summary:
        summary["fraction_of_analytic"] = summary["decode_speedup"] / summary["analytic_speedup"]
    log(
        f"analytic speedup {summary['analytic_speedup']:.2f}x (round = {summary['round_cost_in_target_steps']:.2f} "
        f"target steps)"
    )


def _add_hf_baseline(
    source, draft_source, ids, rows, summary, max_new_tokens, eos, log, early_exit=None, prompt_lookup=None
) -> None:
    from jaxspec.hf_reference import assistant_settings, hf_generate, load_hf_model

    hf = load_hf_model(source, summary["dtype"])
    assistant = load_hf_model(draft_source, summary["dtype"]) if draft_source is not None else None
    if assistant is not None or early_exit is not None:
        summary["hf_assistant_settings"] = assistant_settings(assistant if assistant is not None else hf)
    how = dict(assistant=assistant, early_exit=early_exit, prompt_lookup=prompt_lookup)
    hf_generate(hf, ids[0], min(8, max_new_tokens), eos, **how)  # warm-up, not timed
    hf_new = hf_s = 0
    name = (
        "assisted"
        if assistant is not None
        else f"assistant_early_exit={early_exit}"
        if early_exit is not None
        else "prompt_lookup_num_tokens={}, max_matching_ngram_size={}".format(*prompt_lookup)
        if prompt_lookup is not None
        else "vanilla"
    )
    for row, pid in zip(rows, ids):
        out, dt = hf_generate(hf, pid, max_new_tokens, eos, **how)
        row["hf_tok_per_s"] = len(out) / dt
        row["hf_identical"] = out == row["output_ids"]
        hf_new, hf_s = hf_new + len(out), hf_s + dt
        log(f"  HF {name} {row['id']}: {len(out)} tokens, {len(out) / dt:.2f} tok/s, identical={row['hf_identical']}")
    summary["hf_method"] = name
    summary["hf_tok_per_s"] = hf_new / hf_s
    summary["speedup_vs_hf"] = summary["tok_per_s"] / summary["hf_tok_per_s"]
    summary["hf_identical"] = sum(r["hf_identical"] for r in rows)
    del hf, assistant
    gc.collect()  # the HF pair is ~8 GB: free it before the next run loads anything


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
