"""Speculative decoding benchmark (issue 3, §6): Qwen2.5-Coder-0.5B drafting for 1.5B, fp32, greedy,
128 new tokens, batch 1.

For each prompt set, in one process (models loaded once, every ratio from the same run):
  1. a small sweep on the set's first `--sweep-prompts` prompts: vanilla, chains of several k and trees
     of several (D, K) → results/spec_sweep_<set>.json (speedup, mean accepted length, analytic speedup);
  2. the full set: vanilla, the best chain and the best tree of the sweep (by tok/s), and HF assisted
     generation (transformers' defaults) on the same prompts and pair
     → results/spec_<set>_<method>.json (the `bench` JSON contract).
Then results/speculative.md, the README table, from every JSON present.

    python experiments/bench_speculative.py --sets humaneval humaneval-body     # ~1.5 h on the 2-core box
    python experiments/bench_speculative.py --sets spec-bench --per-category 10 # 130 prompts, ~3.5 h
    python experiments/bench_speculative.py --table-only"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TARGET, DRAFT = "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"
CHAINS = [5, 7, 10, 15]
TREES = [(5, 2), (7, 2), (4, 3)]


def log(s: str) -> None:
    print(s, file=sys.stderr, flush=True)


def sources(name: str, per_category: int) -> list[str]:
    """Prompt sources of a set; Spec-Bench runs category by category (10 each in the issue)."""
    if name != "spec-bench":
        return [name]
    from jaxspec.prompts import _spec_bench
    cats = sorted({p.category for p in _spec_bench(None)})
    return [f"spec-bench:{c}" for c in cats]


def bench_all(name: str, n: int, sweep_n: int, per_category: int, tokens: int, hf: bool, chains, trees) -> None:
    from conversion.loader import load_model
    from jaxspec.bench import run_bench, write_json
    from jaxspec.speculative import chain, tree

    models = (load_model(TARGET), load_model(DRAFT))
    common = dict(max_new_tokens=tokens, draft=DRAFT, loaded=models, log=log)
    srcs = sources(name, per_category)
    limit = per_category if name == "spec-bench" else n

    # 1. sweep (on the first prompts of the set; for Spec-Bench, on its first category's)
    sweep = {"set": name, "prompts": sweep_n, "configs": []}
    van = run_bench(TARGET, srcs[0], limit=sweep_n, **common)
    for meth in [chain(k) for k in chains] + [tree(d, w) for d, w in trees]:
        r = run_bench(TARGET, srcs[0], limit=sweep_n, method=meth, vanilla=van, **common)
        s = r["summary"]
        sweep["configs"].append({k: s[k] for k in ("method", "method_config", "tok_per_s", "speedup", "decode_speedup",
                                                   "mean_accepted_length", "acceptance_rate", "analytic_speedup",
                                                   "fraction_of_analytic", "vanilla_identical")})
        log(f"sweep {name} {meth}: {s['speedup']:.2f}x")
    sweep["vanilla_tok_per_s"] = van["summary"]["tok_per_s"]
    write_json(sweep, RESULTS / f"spec_sweep_{name}.json")
    best = {}
    for kind in ("chain", "tree"):
        cands = [c for c in sweep["configs"] if c["method"] == kind]
        cfg = max(cands, key=lambda c: c["tok_per_s"])["method_config"]["shape"]
        best[kind] = chain(cfg["depth"]) if kind == "chain" else tree(cfg["depth"], cfg["width"])

    # 2. the full set, every method against the same vanilla run
    for src in srcs:
        tag = src.replace(":", "-")
        van = run_bench(TARGET, src, limit=limit, **common)
        write_json(van, RESULTS / f"spec_{tag}_vanilla.json")
        for kind, meth in best.items():
            r = run_bench(TARGET, src, limit=limit, method=meth, vanilla=van, timing=True,
                          hf_baseline=hf and kind == "chain", **common)
            write_json(r, RESULTS / f"spec_{tag}_{kind}.json")
            s = r["summary"]
            log(f"{src} {kind}: {s['tok_per_s']:.2f} tok/s, speedup {s['speedup']:.2f}x")


def _row(src: str) -> str | None:
    files = {k: RESULTS / f"spec_{src}_{k}.json" for k in ("vanilla", "chain", "tree")}
    if not all(f.exists() for f in files.values()):
        return None
    v, c, t = (json.loads(f.read_text())["summary"] for f in files.values())
    cfg = lambda s: "k=" + str(s["method_config"]["shape"]["depth"]) if s["method"] == "chain" else \
        "D={depth},K={width}".format(**s["method_config"]["shape"])  # noqa: E731
    hf = f"{c['hf_tok_per_s']:.2f}" if "hf_tok_per_s" in c else "–"
    vs_hf = f"{c['speedup_vs_hf']:.2f}×" if "speedup_vs_hf" in c else "–"
    return (f"| {src} | {v['total']['prompts']} | {v['tok_per_s']:.2f} | {c['tok_per_s']:.2f} ({cfg(c)}) "
            f"| {c['speedup']:.2f}× | {c['mean_accepted_length']:.2f} | {c['analytic_speedup']:.2f}× "
            f"| {c['fraction_of_analytic']:.2f} | {t['tok_per_s']:.2f} ({cfg(t)}) | {t['speedup']:.2f}× "
            f"| {t['mean_accepted_length']:.2f} | {hf} | {vs_hf} | {c['vanilla_identical']}+{t['vanilla_identical']}"
            f"/{2 * v['total']['prompts']} |")


def table() -> str:
    head = ("| prompts | n | vanilla tok/s | chain tok/s | chain speedup | chain mean acc. len | chain analytic "
            "| achieved / analytic (decode) | tree tok/s | tree speedup | tree mean acc. len | HF assisted tok/s "
            "| chain vs HF assisted | identical to vanilla |\n" + "|---" * 14 + "|\n")
    srcs = sorted({p.name[len("spec_"):-len("_vanilla.json")] for p in RESULTS.glob("spec_*_vanilla.json")})
    rows = [r for r in map(_row, srcs) if r]
    sweeps = []
    for p in sorted(RESULTS.glob("spec_sweep_*.json")):
        sw = json.loads(p.read_text())
        cells = ", ".join(
            f"{c['method']} {c['method_config']['shape']['depth']}x{c['method_config']['shape']['width']}: "
            f"{c['speedup']:.2f}× (acc. len {c['mean_accepted_length']:.2f}, analytic {c['analytic_speedup']:.2f}×)"
            for c in sw["configs"])
        sweeps.append(f"- sweep on {sw['set']} ({sw['prompts']} prompts): {cells}")
    return head + "\n".join(rows) + "\n\n" + "\n".join(sweeps) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["humaneval", "humaneval-body"],
                    help="humaneval, humaneval-body, spec-bench")
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--sweep-prompts", type=int, default=4)
    ap.add_argument("--per-category", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--no-hf", action="store_true", help="skip HF assisted generation")
    ap.add_argument("--chains", type=int, nargs="+", default=CHAINS, help="chain lengths k to sweep")
    ap.add_argument("--trees", nargs="+", default=[f"{d}x{w}" for d, w in TREES], help="trees DxK to sweep")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        for name in args.sets:
            trees = [tuple(map(int, t.split("x"))) for t in args.trees]
            bench_all(name, args.prompts, args.sweep_prompts, args.per_category, args.max_new_tokens, not args.no_hf,
                      args.chains, trees)
    md = table()
    (RESULTS / "speculative.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
