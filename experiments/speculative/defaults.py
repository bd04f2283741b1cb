"""Each method's registry default against the default chain, head to head (issue 43: no method's default may
lose to the default `chain` on a set where both run).

Every method is built from the registry by name (`make_runner(..., method=NAME, options=...)`), so what is
measured is exactly what `--method NAME` and `speculate(method=NAME)` run. A method spec is `NAME` (its
defaults) or `NAME:opt=value,...` (a candidate default, e.g. `cascade:k=7,min_match=3`). Per prompt set,
vanilla, the default chain and every spec run interleaved prompt by prompt in one process (rotated order,
best of `--repeats`; compile and warm-up excluded; interleaved.py), greedy: every output must equal
vanilla's. The 1.5B target, the 0.5B draft (for the methods that take one), fp32, batch 1, one CPU device.

    python -m experiments.speculative.defaults run --sets spec-bench:math_reasoning:0:2 ... \
        --methods cascade cascade:k=7,min_match=3 --tag _cascade
    python -m experiments.speculative.defaults table --tag _cascade

JSON: experiments/results/speculative/defaults{tag}.json (one chunk per set, appended as each finishes; a
rerun skips the sets done); PNG: defaults{tag}.png (decode speedup over vanilla per set and method)."""

from __future__ import annotations

import argparse
import json

from experiments.common.bars import grouped_bars
from experiments.common.chunks import chunks, measure_chunk
from experiments.common.paths import results_dir
from experiments.common.results import log, write_json

RESULTS = results_dir("speculative")
TARGET, DRAFT = "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"
BASE = "chain"  # the default every method is held against


def parse_spec(spec: str) -> tuple[str, dict]:
    """`NAME` or `NAME:opt=value,...` -> (name, options); values are ints where they parse as ints."""
    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"{spec!r}: options are opt=value, got {item!r}")
        options[key] = int(value) if value.lstrip("-").isdigit() else value
    return name, options


def _runners(t, d, specs, kw) -> dict:
    from jaxspec import methods
    from jaxspec.speculative import make_runner

    runners = {"vanilla": make_runner(t, None, None, **kw)}
    for spec in [BASE, *specs]:
        name, options = parse_spec(spec)
        needs = methods.get(name).draft_model != "none" and "exit_layer" not in options
        runners[spec] = make_runner(t, d if needs else None, name, options=options, **kw)
    return runners


def cmd_run(args) -> None:
    from conversion.loader import load_model
    from conversion.tokenizer import eos_ids
    from jaxspec.prompts import encode, load_prompts
    from jaxspec.speculative.runner import runner_slots

    path = RESULTS / f"defaults{args.tag}.json"
    out = json.loads(path.read_text()) if path.exists() else {"target": TARGET, "draft": DRAFT, "chunks": []}
    config = {"methods": [BASE, *args.methods], "max_new_tokens": args.max_new_tokens, "repeats": args.repeats}
    for c in out["chunks"]:
        if c["config"] != config:
            raise SystemExit(f"{path} was measured with {c['config']}; this run's settings differ: use another --tag")
    done = {(c["source"], c["offset"], c["n"]) for c in out["chunks"]}
    todo = [c for c in chunks(args.sets) if c not in done]
    if not todo:
        log("every set is already measured")
        return
    t, d = load_model(TARGET), load_model(DRAFT)
    eos, N = eos_ids(t.tokenizer, t.cfg), args.max_new_tokens
    sets = {c: [encode(t.tokenizer, p) for p in load_prompts(c[0], c[2], c[1])] for c in todo}
    longest = max(len(i) for ids in sets.values() for i in ids)
    # one cache size for every runner and set (the largest any method needs): each loop compiles once
    kw = dict(max_new_tokens=N, eos_ids=eos, max_len=runner_slots(longest, N, None) + 64)
    runners = _runners(t, d, args.methods, kw)
    warmed: set = set()
    for key, ids in sets.items():
        chunk, _ = measure_chunk(runners, key, ids, args.repeats, warmed, config=config)
        out["chunks"].append(chunk)
        write_json(out, path)  # after every set: a crash keeps what was measured
        log("  " + "  ".join(f"{m} {s['decode_speedup']:.2f}x" for m, s in _pool([chunk]).items() if m != "vanilla"))
    cmd_table(args)


def _pool(chunks_: list[dict]) -> dict:
    rows: dict[str, list] = {}
    for c in chunks_:
        for m, rs in c["rows"].items():
            rows.setdefault(m, []).extend(rs)
    from jaxspec.bench import stage_shares
    from jaxspec.pooling import pooled
    from jaxspec.speculative import merge

    van = rows.pop("vanilla")
    out = {"vanilla": pooled(van)}
    for m, rs in rows.items():  # tokens over seconds, speedups with bootstrap intervals, acceptance counts
        out[m] = pooled(rs, van) | merge([r["stats"] for r in rs])
        out[m]["vanilla_identical"] = sum(r["identical"] for r in rs)
        if "cascade" in (rs[0].get("drafter") or {}):
            out[m]["stages"] = stage_shares(rs)
    return out


def cmd_table(args) -> None:
    data = json.loads((RESULTS / f"defaults{args.tag}.json").read_text())
    by_set: dict[str, list] = {}
    for c in data["chunks"]:
        by_set.setdefault(c["source"].removeprefix("spec-bench:"), []).append(c)
    pooled = {s: _pool(cs) for s, cs in by_set.items()} | {"all (pooled)": _pool(data["chunks"])}
    methods = [m for m in next(iter(pooled.values())) if m != "vanilla"]
    print("| set | n | vanilla tok/s | " + " | ".join(methods) + " |")
    print("|---|---|---|" + "---|" * len(methods))
    for s, p in pooled.items():
        n = sum(c["n"] for c in (data["chunks"] if s == "all (pooled)" else by_set[s]))
        cells = []
        for m in methods:
            r = p[m]
            lose = " **<**" if m != BASE and r["decode_speedup"] < p[BASE]["decode_speedup"] else ""
            lookup = f"; lookup {r['stages']['ngram_share']:.0%}" if r.get("stages") else ""
            length = r["mean_accepted_length"]
            cells.append(f"{r['speedup']:.2f}× (dec {r['decode_speedup']:.2f}; len {length:.2f}{lookup}){lose}")
        print(f"| {s} | {n} | {p['vanilla']['tok_per_s']:.2f} | " + " | ".join(cells) + " |")
    grouped_bars(
        RESULTS / f"defaults{args.tag}.png",
        list(pooled),
        {m: [p[m]["decode_speedup"] for p in pooled.values()] for m in methods},
        ylabel="decode speedup over vanilla",
        title=f"registry defaults against the default chain: {data['target']}, draft {data['draft']}",
        figsize=(max(8, 1.4 * len(pooled)), 4.5),
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="measure the methods against vanilla and the default chain")
    r.add_argument("--sets", nargs="+", required=True, metavar="SOURCE:OFFSET:N")
    r.add_argument("--methods", nargs="+", required=True, metavar="NAME[:opt=value,...]")
    r.add_argument("--max-new-tokens", type=int, default=64)
    r.add_argument("--repeats", type=int, default=1)
    r.add_argument("--tag", default="")
    t = sub.add_parser("table", help="the markdown table and the PNG of a result file")
    t.add_argument("--tag", default="")
    args = ap.parse_args(argv)
    {"run": cmd_run, "table": cmd_table}[args.cmd](args)


if __name__ == "__main__":
    main()
