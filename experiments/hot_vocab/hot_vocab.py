"""Hot-vocabulary draft heads (issue 16 §2; FR-Spec, VocabTrim) on the Qwen2.5-Coder pair: how much of
the target's text the V most frequent tokens cover, what trimming the 0.5B draft's head to V saves per
draft step, and what it costs in acceptance and end-to-end speed with the 1.5B target.

    python -m jaxspec.hot_vocab_file --model qwen2.5-coder-1.5b-instruct   # the frequency file (once)
    python -m experiments.hot_vocab.hot_vocab coverage    # offline: V's share of the 1.5B's outputs on the eval sets
    python -m experiments.hot_vocab.hot_vocab coverage --file experiments/results/hot_vocab/hot_vocab_large.json \
        --key coverage_large
    python -m experiments.hot_vocab.hot_vocab step        # draft step time per V (best of 30, interleaved)
    python -m experiments.hot_vocab.hot_vocab step --sizes 32768 49152 65536 --key step_v2   # kept beside `step`
    python -m experiments.hot_vocab.hot_vocab run --sets humaneval:5 spec-bench:qa:3   # speculation per V vs vanilla
    python -m experiments.hot_vocab.hot_vocab run --sizes 32768 49152 65536 --key run_wide   # kept beside `run`
    python -m experiments.hot_vocab.hot_vocab run --sizes 49152 \
        --file experiments/results/hot_vocab/hot_vocab_v1.json --key run_v2 --repeats 2 \
        --sets humaneval:5 spec-bench:qa:3 spec-bench:translation:3   # the shipped file beside the first one
    python -m experiments.hot_vocab.hot_vocab exit-step   # the 1.5B's own exits (self-drafters): step per exit and V
    python -m experiments.hot_vocab.hot_vocab self-run --sets humaneval:5 spec-bench:qa:3   # LayerSkip / DEL per V

Coverage reads experiments/results/continuations/*_134_*.json (the 1.5B's greedy continuations of the experiments'
own prompts; the calibration text came from other, held-out prompts: jaxspec/hot_vocab_file.py). `step`
times one draft forward (T = 1, a 256-slot cache) with the trimmed head against the full one, and the
target's for the ratio that bounds chain speculation. `run` times vanilla, the full-head chain and each
V, interleaved prompt by prompt (experiments/common/interleaved.py), greedy, and checks every output against
vanilla's. `exit-step` and `self-run` do the same for the self-drafters, whose head is the 1.5B's own
(151,936 x 1536, tied: 933 MB of a 6.2 GB step in f32): the draft step of the first E layers with the full
and the trimmed head, and DEL's measured round cost (which exits can pay) with each; then LayerSkip and
DEL with and without the hot head against vanilla. All write experiments/results/hot_vocab/hot_vocab.json (one key per
command, each with its command line and commit; `run --key` keeps runs with other sizes apart) and
experiments/results/hot_vocab/hot_vocab.png."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from experiments.common import interleaved
from experiments.common.paths import CONTINUATIONS, results_dir
from experiments.common.results import log, provenance
from experiments.hot_vocab.hot_vocab_plot import plot

RESULTS = results_dir("hot_vocab")
TARGET, DRAFT = "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"
SIZES = (4096, 8192, 16384, 32768, 49152, 65536)
OUT = RESULTS / "hot_vocab.json"


def _load() -> dict:
    return json.loads(OUT.read_text()) if OUT.exists() else {}


def _save(key: str, value) -> None:
    from jaxspec.bench import write_json

    out = _load()
    out[key] = {**value, **provenance()}  # per key: each command's run keeps its own command line and commit
    write_json(out, OUT)
    plot(out, RESULTS / "hot_vocab.png")
    log(f"wrote {RESULTS / 'hot_vocab.png'}")


def _frequency_doc(tok, file=None):
    from jaxspec.speculative.hot_vocab import find_file, load_hot_vocab

    path = Path(file) if file else find_file(tok)
    load_hot_vocab(path, 1, tokenizer=tok)  # made for this tokenizer
    return path, json.loads(path.read_text())


def cmd_coverage(args) -> None:
    from conversion.loader import load_model_tokenizer
    from jaxspec.speculative.hot_vocab import coverage, file_ranking, rank

    tok = load_model_tokenizer(TARGET)
    path, doc = _frequency_doc(tok, args.file)
    counts, prior, soft = file_ranking(doc)
    order = rank(counts, doc["vocab_size"], prior, soft)
    from types import SimpleNamespace

    from conversion.tokenizer import eos_ids

    stop = set(eos_ids(tok, SimpleNamespace(eos_token_ids=())))
    cut = lambda c: c[: next((i + 1 for i, t in enumerate(c) if t in stop), len(c))]  # noqa: E731  (through EOS)
    sets, pooled = {}, []
    for f in sorted(CONTINUATIONS.glob("*_134_*.json")):
        d = json.loads(f.read_text())  # recorded without stop tokens: what follows EOS is never generated in use
        toks = [t for c in d["continuations"] for t in cut(c[: args.new])]
        pooled += toks
        sets[d["source"]] = {str(n): c for n, c in coverage(order, toks, SIZES).items()}
        log(f"{d['source']}: " + ", ".join(f"{int(n) // 1024}K {c:.4f}" for n, c in sets[d["source"]].items()))
    sets["pooled"] = {str(n): c for n, c in coverage(order, pooled, SIZES).items()}
    log("pooled: " + ", ".join(f"{int(n) // 1024}K {c:.4f}" for n, c in sets["pooled"].items()))
    _save(
        args.key,
        {
            "file": path.name,
            "tokens_counted": doc["tokens_counted"],
            "distinct": doc["distinct"],
            "new_tokens": args.new,
            "sets": sets,
        },
    )


def cmd_step(args) -> None:
    import jax
    import jax.numpy as jnp

    from conversion.loader import load_model
    from jaxspec.cache import init_cache
    from jaxspec.model import forward
    from jaxspec.speculative.hot_vocab import load_hot_vocab, trim_head
    from jaxspec.timing import best_times

    d, t = load_model(DRAFT), load_model(TARGET)
    path, _ = _frequency_doc(d.tokenizer)
    S, fill = 256, 128

    def stepper(params, cfg):
        cache = init_cache(cfg, 1, S).replace(lengths=jnp.full((1,), fill, jnp.int32))
        fn = jax.jit(lambda p, c: forward(p, jnp.ones((1, 1), jnp.int32), c, cfg)[0])
        return fn, params, cache

    calls = {"target": stepper(t.params, t.cfg), "full": stepper(d.params, d.cfg)}
    for n in args.sizes:
        calls[n] = stepper(trim_head(d.params, d.cfg, load_hot_vocab(path, n, tokenizer=d.tokenizer)), d.cfg)
    best = best_times(calls, args.repeats)
    res = {
        "file": path.name,
        "repeats": args.repeats,
        "cache_slots": S,
        "target_ms": best["target"] * 1e3,
        "full_ms": best["full"] * 1e3,
        "sizes": {},
    }
    hb = d.cfg.vocab_size * d.cfg.hidden_size * 4
    for n in args.sizes:
        ms = best[n] * 1e3
        res["sizes"][str(n)] = {
            "ms": ms,
            "saving": 1 - best[n] / best["full"],
            "vs_target": best[n] / best["target"],
            "head_bytes_saved": hb * (1 - n / d.cfg.vocab_size),
        }
        log(
            f"V={n}: {ms:.2f} ms ({res['sizes'][str(n)]['saving']:.1%} below the full head's "
            f"{best['full'] * 1e3:.2f} ms; "
            f"{best[n] / best['target']:.3f} of a target step)"
        )
    log(
        f"full head: {best['full'] * 1e3:.2f} ms = {best['full'] / best['target']:.3f} of a target step "
        f"({best['target'] * 1e3:.1f} ms)"
    )
    _save(args.key, res)


def _exit_stepper(params, cfg, exit_layer: int, vocab, slots: int, fill: int):
    """A jitted forward of one token through the first `exit_layer` layers and the head (trimmed to
    `vocab` when given) over a `slots`-slot cache holding `fill` tokens: a self-drafter's draft step."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    from jaxspec.cache import init_cache
    from jaxspec.model import forward
    from jaxspec.speculative.hot_vocab import trim_head

    ecfg = dataclasses.replace(cfg, num_layers=exit_layer)
    p = dict(params, layers=params["layers"][:exit_layer])
    p = p if vocab is None else trim_head(p, ecfg, vocab)
    cache = init_cache(ecfg, 1, slots).replace(lengths=jnp.full((1,), fill, jnp.int32))
    return jax.jit(lambda q, c: forward(q, jnp.ones((1, 1), jnp.int32), c, ecfg)[0]), p, cache


def cmd_exit_step(args) -> None:
    import jax
    import jax.numpy as jnp

    from conversion.loader import load_model
    from jaxspec.cache import init_cache
    from jaxspec.model import forward
    from jaxspec.selfspec.del_drafter import spread_exits
    from jaxspec.selfspec.round_cost import measure_round_cost
    from jaxspec.speculative.hot_vocab import load_hot_vocab
    from jaxspec.timing import best_times

    t = load_model(TARGET)
    cfg = t.cfg
    path, _ = _frequency_doc(t.tokenizer)
    vocabs = {n: load_hot_vocab(path, n, tokenizer=t.tokenizer) for n in args.sizes}
    S, fill = 256, 128
    cache = init_cache(cfg, 1, S).replace(lengths=jnp.full((1,), fill, jnp.int32))
    calls = {"target": (jax.jit(lambda q, c: forward(q, jnp.ones((1, 1), jnp.int32), c, cfg)[0]), t.params, cache)}
    for e in args.exits:
        calls[e, 0] = _exit_stepper(t.params, cfg, e, None, S, fill)
        calls |= {(e, n): _exit_stepper(t.params, cfg, e, v, S, fill) for n, v in vocabs.items()}
    best = best_times(calls, args.repeats)
    del calls
    tgt = best["target"]
    hb = cfg.vocab_size * cfg.hidden_size * 4
    res = {
        "model": TARGET,
        "file": path.name,
        "repeats": args.repeats,
        "cache_slots": S,
        "target_ms": tgt * 1e3,
        "head_bytes": hb,
        "tied": cfg.tie_embeddings,
        "exits": {},
    }
    for e in args.exits:
        full = best[e, 0]
        row = {"full_ms": full * 1e3, "full_vs_target": full / tgt, "sizes": {}}
        for n in args.sizes:
            row["sizes"][str(n)] = {
                "ms": best[e, n] * 1e3,
                "saving": 1 - best[e, n] / full,
                "vs_target": best[e, n] / tgt,
            }
        res["exits"][str(e)] = row
        log(
            f"E{e}: full head {full * 1e3:.1f} ms ({full / tgt:.3f} of a step); "
            + ", ".join(
                f"{n // 1024}K {best[e, n] * 1e3:.1f} ms "
                f"(-{row['sizes'][str(n)]['saving']:.1%}, {best[e, n] / tgt:.3f})"
                for n in args.sizes
            )
        )
    log(f"target step {tgt * 1e3:.1f} ms")
    # DEL's own cost model (round_cost.py) with and without the hot head: which candidate exits can pay
    exits = spread_exits(cfg.num_layers)
    del_cost = {}
    for name, v in {"full": None, **{str(n): vocabs[n] for n in args.del_sizes}}.items():
        c = measure_round_cost(t.params, cfg, exits, depth=18, max_len=512, vocab=v)
        del_cost[name] = c.describe()
        log(
            f"DEL cost ({name}): kept exits {list(c.exits)}, draft {[round(x, 3) for x in c.draft]}, "
            f"verify[1..4] {[round(x, 3) for x in c.verify[1:5]]}, step {c.step_ms:.1f} ms"
        )
    res["del_cost"] = {"candidates": list(exits), "depth": 18, "max_len": 512, "by_head": del_cost}
    _save("exit_step", res)


def _ls_specs(specs):
    """["E:K", ...] -> [(E, K), ...]."""
    return [tuple(map(int, s.split(":"))) for s in specs]


def cmd_self_run(args) -> None:
    from conversion.loader import load_model
    from conversion.tokenizer import eos_ids
    from jaxspec.decode import cache_slots
    from jaxspec.prompts import encode, load_prompts
    from jaxspec.selfspec import DEL, LayerSkip
    from jaxspec.speculative import chain, make_runner
    from jaxspec.speculative.hot_vocab import load_hot_vocab

    t = load_model(TARGET)
    path, _ = _frequency_doc(t.tokenizer)
    vocab = load_hot_vocab(path, args.vocab, tokenizer=t.tokenizer)
    eos, N = eos_ids(t.tokenizer, t.cfg), args.max_new_tokens
    V = f"V{args.vocab}"
    sets = _load().get("self_run", {}).get("sets", {})
    for spec in args.sets:
        source, limit = spec.rsplit(":", 1)
        ids = [encode(t.tokenizer, p) for p in load_prompts(source, int(limit))]
        slots = cache_slots(max(map(len, ids)) + N + 19)  # one size for every method (DEL's chain(18) + 1)
        kw = dict(max_new_tokens=N, eos_ids=eos, max_len=slots)
        runners = {"vanilla": make_runner(t, None, None, **kw)}
        for e, k in _ls_specs(args.ls):
            runners[f"ls-E{e}-k{k}"] = make_runner(t, None, chain(k), **kw, drafter=LayerSkip(e))
            runners[f"ls-E{e}-k{k}-{V}"] = make_runner(t, None, chain(k), **kw, drafter=LayerSkip(e, vocab=vocab))
        runners["del"] = make_runner(t, None, chain(18), **kw, drafter=DEL(), measure_costs=True)
        runners[f"del-{V}"] = make_runner(t, None, chain(18), **kw, drafter=DEL(vocab=vocab), measure_costs=True)
        compile_s = interleaved.prepare(runners, ids)
        rows = interleaved.measure(runners, ids, args.repeats, log)
        table = {"vanilla": interleaved.summary(rows["vanilla"])}
        for name in list(runners)[1:]:
            s = interleaved.summary(rows[name], rows["vanilla"])
            table[name] = {k: v for k, v in s.items() if k not in ("per_row",)} | {"compile_s": compile_s[name]}
            if name.startswith("del"):
                exits = [x for r in rows[name] for x in r["drafter"]["exit_layer"]]
                table[name]["plain_share"] = exits.count(0) / len(exits) if exits else None
                table[name]["exit_shares"] = {str(e): exits.count(e) / len(exits) for e in sorted(set(exits))}
                table[name]["drafter"] = runners[name].spec.drafter.describe()
            if s["vanilla_identical"] != len(ids):
                raise RuntimeError(f"{spec} {name}: {s['vanilla_identical']}/{len(ids)} outputs equal vanilla's")
            log(
                f"[{spec}] {name}: {s['speedup']:.3f}x (decode {s['decode_speedup']:.3f}x), acceptance "
                f"{s['acceptance_rate']}, mean accepted {s['mean_accepted_length']}"
                + (f", plain {table[name]['plain_share']:.2f}" if "plain_share" in table[name] else "")
            )
        sets[spec] = table
        _save(
            "self_run",
            {
                "model": TARGET,
                "file": path.name,
                "vocab": args.vocab,
                "ls": args.ls,
                "del_cap": 18,
                "max_new_tokens": N,
                "repeats": args.repeats,
                "sets": sets,
            },
        )


def cmd_run(args) -> None:
    from conversion.loader import load_model
    from conversion.tokenizer import eos_ids
    from jaxspec.decode import cache_slots
    from jaxspec.prompts import encode, load_prompts
    from jaxspec.speculative import DraftModel, chain, make_runner
    from jaxspec.speculative.hot_vocab import load_hot_vocab

    t, d = load_model(TARGET), load_model(DRAFT)
    path, _ = _frequency_doc(d.tokenizer)
    eos, N, meth = eos_ids(t.tokenizer, t.cfg), args.max_new_tokens, chain(args.k)
    sets = {}
    for spec in args.sets:
        source, limit = spec.rsplit(":", 1)
        ids = [encode(t.tokenizer, p) for p in load_prompts(source, int(limit))]
        slots = cache_slots(max(map(len, ids)) + N + meth.shape.nodes + 1)
        kw = dict(max_new_tokens=N, eos_ids=eos, max_len=slots)
        runners = {"vanilla": make_runner(t, None, None, **kw), "full": make_runner(t, d, meth, **kw)}
        for n in args.sizes:
            runners[f"V{n}"] = make_runner(
                t, d, meth, **kw, drafter=DraftModel(vocab=load_hot_vocab(path, n, tokenizer=d.tokenizer))
            )
            if args.file:  # the same V from another frequency file, beside the shipped one
                other = load_hot_vocab(args.file, n, tokenizer=d.tokenizer)
                runners[f"V{n}-{Path(args.file).stem}"] = make_runner(t, d, meth, **kw, drafter=DraftModel(vocab=other))
        compile_s = interleaved.prepare(runners, ids)
        rows = interleaved.measure(runners, ids, args.repeats, log)
        table = {"vanilla": interleaved.summary(rows["vanilla"])}
        for name in list(runners)[1:]:
            s = interleaved.summary(rows[name], rows["vanilla"])
            table[name] = {k: v for k, v in s.items() if k not in ("per_row",)} | {"compile_s": compile_s[name]}
            if s["vanilla_identical"] != len(ids):
                raise RuntimeError(f"{spec} {name}: {s['vanilla_identical']}/{len(ids)} outputs equal vanilla's")
            log(
                f"[{spec}] {name}: {s['speedup']:.3f}x (decode {s['decode_speedup']:.3f}x), acceptance "
                f"{s['acceptance_rate']:.3f}, mean accepted {s['mean_accepted_length']:.2f}"
            )
        sets[spec] = table
        _save(
            args.key,
            {
                "file": path.name,
                "other_file": args.file and Path(args.file).name,
                "k": args.k,
                "max_new_tokens": N,
                "repeats": args.repeats,
                "sets": sets,
            },
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("coverage")
    c.add_argument("--new", type=int, default=128)
    c.add_argument("--file", default=None, help="a frequency file (default: the shipped one)")
    c.add_argument("--key", default="coverage", help="the JSON key (another keeps the shipped file's)")
    s = sub.add_parser("step")
    s.add_argument("--sizes", type=int, nargs="+", default=[8192, 16384, 32768])
    s.add_argument("--repeats", type=int, default=30)
    s.add_argument(
        "--key", default="step", help="the JSON key: another keeps an earlier step run (the plot shows `step`)"
    )
    r = sub.add_parser("run")
    r.add_argument("--sets", nargs="+", default=["humaneval:5", "spec-bench:qa:3"])
    r.add_argument("--sizes", type=int, nargs="+", default=[8192, 16384, 32768])
    r.add_argument("-k", type=int, default=4)
    r.add_argument("--max-new-tokens", type=int, default=48)
    r.add_argument("--repeats", type=int, default=2)
    r.add_argument("--file", default=None, help="also each V from this frequency file")
    r.add_argument(
        "--key",
        default="run",
        help="the JSON key (and plot panel) of this run: another key keeps an earlier run with other sizes",
    )
    e = sub.add_parser("exit-step")
    e.add_argument("--exits", type=int, nargs="+", default=[14, 20, 24, 27])
    e.add_argument("--sizes", type=int, nargs="+", default=[8192, 16384, 32768])
    e.add_argument("--del-sizes", type=int, nargs="*", default=[32768], help="DEL's round cost per head")
    e.add_argument("--repeats", type=int, default=30)
    sr = sub.add_parser("self-run")
    sr.add_argument("--sets", nargs="+", default=["humaneval:5", "spec-bench:qa:3"])
    sr.add_argument("--vocab", type=int, default=32768)
    sr.add_argument("--ls", nargs="*", default=["27:1", "24:2"], metavar="E:K", help="LayerSkip exit and chain")
    sr.add_argument("--max-new-tokens", type=int, default=48)
    sr.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    t0 = time.perf_counter()
    {"coverage": cmd_coverage, "step": cmd_step, "run": cmd_run, "exit-step": cmd_exit_step, "self-run": cmd_self_run}[
        args.cmd
    ](args)
    log(f"done in {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
