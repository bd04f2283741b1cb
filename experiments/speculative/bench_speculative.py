"""Speculative decoding benchmark (issue 3, §6): Qwen2.5-Coder-0.5B drafting for 1.5B, fp32, greedy,
128 new tokens, batch 1.

For each prompt set, in one process (models loaded once, every ratio from the same run; Spec-Bench
runs a process per category, see `spec_bench_by_category`):
  1. a small sweep on the set's first `--sweep-prompts` prompts: vanilla, chains of several k and trees
     of several (D, K) → experiments/results/speculative/spec_sweep_<set>.json
     (speedup, mean accepted length, analytic speedup);
  2. the full set: vanilla, the best chain and the best tree of the sweep (by tok/s), and HF assisted
     generation (transformers' defaults) on the same prompts and pair
     → experiments/results/speculative/spec_<set>_<method>.json (the `bench` JSON contract, plus the command
     line and commit).
Then experiments/results/speculative/speculative.md, the docs' table, from every JSON present.

    python -m experiments.speculative.bench_speculative --sets humaneval humaneval-body     # ~1.5 h on the 2-core box
    python -m experiments.speculative.bench_speculative --sets spec-bench --chains 3 5 7 10 --trees 3x2 5x2 4x3 \
        --no-timing --resume         # 130 prompts, ~4 h: a process per category; --resume goes on after a stop
    python -m experiments.speculative.bench_speculative --table-only"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from experiments.common.paths import results_dir
from experiments.common.results import log, write_json

MODULE = "experiments.speculative.bench_speculative"  # child processes run it as a module, from the repository
RESULTS = results_dir("speculative")
TARGET, DRAFT = "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"
CHAINS = [5, 7, 10, 15]
TREES = [(5, 2), (7, 2), (4, 3)]


def sources(name: str, categories: list[str] | None) -> list[str]:
    """Prompt sources of a set; Spec-Bench runs category by category (10 each in the issue)."""
    if name != "spec-bench":
        return [name]
    from jaxspec.prompts import spec_bench_prompts

    cats = sorted({p.category for p in spec_bench_prompts(None)})
    unknown = set(categories or []) - set(cats)
    if unknown:
        raise SystemExit(f"unknown Spec-Bench categories {sorted(unknown)}; known: {', '.join(cats)}")
    return [f"spec-bench:{c}" for c in (categories or cats)]


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def sweep(name: str, sweep_n: int, chains, trees, common: dict, resume: bool):
    """Vanilla, chains and trees on the set's first `sweep_n` prompts (Spec-Bench: `spec-bench:mixed`, one
    prompt from each of the first categories); returns the best chain and tree by tok/s."""
    from jaxspec.bench import run_bench
    from jaxspec.speculative import chain, tree

    path = RESULTS / f"spec_sweep_{name}.json"
    result = _read(path) if resume else None
    if result is None:
        src = "spec-bench:mixed" if name == "spec-bench" else name
        result = {"set": name, "prompts_source": src, "prompts": sweep_n, "configs": []}
        van = run_bench(TARGET, src, limit=sweep_n, **common)
        for meth in [chain(k) for k in chains] + [tree(d, w) for d, w in trees]:
            r = run_bench(TARGET, src, limit=sweep_n, method=meth, vanilla=van, **common)
            s = r["summary"]
            result["configs"].append(
                {
                    k: s[k]
                    for k in (
                        "method",
                        "method_config",
                        "tok_per_s",
                        "speedup",
                        "decode_speedup",
                        "mean_accepted_length",
                        "acceptance_rate",
                        "analytic_speedup",
                        "fraction_of_analytic",
                        "vanilla_identical",
                    )
                }
            )
            log(f"sweep {name} {meth}: {s['speedup']:.2f}x")
        result["vanilla_tok_per_s"] = van["summary"]["tok_per_s"]
        write_json(result, path)
    best = {}
    for kind in ("chain", "tree"):
        cands = [c for c in result["configs"] if c["method"] == kind]
        cfg = max(cands, key=lambda c: c["tok_per_s"])["method_config"]["shape"]
        best[kind] = chain(cfg["depth"]) if kind == "chain" else tree(cfg["depth"], cfg["width"])
    return best


def spec_bench_by_category(args) -> None:
    """Spec-Bench as one child process per category: one process over all 13 grew past this box's 24 GiB
    (the HF pair is loaded once per category) and was OOM-killed. The first child runs the sweep, the
    others reuse it (`--resume`); without `--resume` here, earlier Spec-Bench results are removed first."""
    cats = [s.split(":", 1)[1] for s in sources("spec-bench", args.categories)]
    if not args.resume:
        for f in [RESULTS / "spec_sweep_spec-bench.json"] + [
            RESULTS / f"spec_spec-bench-{c}_{k}.json" for c in cats for k in ("vanilla", "chain", "tree")
        ]:
            f.unlink(missing_ok=True)
    for c in cats:
        subprocess.run(
            [sys.executable, "-m", MODULE, "--sets", "spec-bench", "--resume", *_options(args), "--categories", c],
            check=True,
        )


def _options(args) -> list[str]:
    """The run options a child process is given (everything but the sets, categories and --resume)."""
    return (
        [
            "--prompts",
            str(args.prompts),
            "--per-category",
            str(args.per_category),
            "--sweep-prompts",
            str(args.sweep_prompts),
            "--max-new-tokens",
            str(args.max_new_tokens),
            "--chains",
            *map(str, args.chains),
            "--trees",
            *args.trees,
        ]
        + ["--no-hf"] * args.no_hf
        + ["--no-timing"] * args.no_timing
    )


def bench_all(name: str, args, chains, trees) -> None:
    """1. the sweep; 2. every source of the set: vanilla, the best chain and tree, HF assisted with the chain.
    With `resume`, the sweep and every source whose three result files exist are reused (a long Spec-Bench
    run can go on later); a source with some files missing is run again whole."""
    from conversion.loader import load_model
    from jaxspec.bench import run_bench

    models = (load_model(TARGET), load_model(DRAFT))
    common = dict(max_new_tokens=args.max_new_tokens, draft=DRAFT, loaded=models, log=log)
    best = sweep(name, args.sweep_prompts, chains, trees, common, args.resume)
    limit = args.per_category if name == "spec-bench" else args.prompts
    for src in sources(name, args.categories):
        tag = src.replace(":", "-")
        if args.resume and _load(tag) is not None:
            log(f"{src}: results present, skipped (--resume)")
            continue  # a category is redone whole, so its ratios always come from one process
        for kind in ("vanilla", "chain", "tree"):  # not a glob: spec-bench-math_* would match math_reasoning
            (RESULTS / f"spec_{tag}_{kind}.json").unlink(missing_ok=True)
        van = run_bench(TARGET, src, limit=limit, **common)
        write_json(van, RESULTS / f"spec_{tag}_vanilla.json")
        for kind, meth in best.items():
            r = run_bench(
                TARGET,
                src,
                limit=limit,
                method=meth,
                vanilla=van,
                timing=not args.no_timing,
                hf_baseline=not args.no_hf and kind == "chain",
                **common,
            )
            write_json(r, RESULTS / f"spec_{tag}_{kind}.json")
            s = r["summary"]
            log(f"{src} {kind}: {s['tok_per_s']:.2f} tok/s, speedup {s['speedup']:.2f}x")


def _load(src: str) -> tuple[dict, ...] | None:
    files = [RESULTS / f"spec_{src}_{k}.json" for k in ("vanilla", "chain", "tree")]
    return tuple(json.loads(f.read_text()) for f in files) if all(f.exists() for f in files) else None


def _pooled(results: list[tuple[dict, ...]]) -> tuple[dict, ...]:
    """Summaries of several sources' runs pooled as one set: tokens over time, accepted over rounds."""

    from jaxspec.pooling import totals

    def pool(runs: list[dict]) -> dict:
        ss, rows = [r["summary"] for r in runs], [p for r in runs for p in r["prompts"]]
        t = totals(rows)  # the prompts' tokens over their seconds (jaxspec/pooling.py)
        out = {
            "method": ss[0]["method"],
            "method_config": ss[0]["method_config"],
            "total": {"prompts": t["prompts"], "new_tokens": t["new_tokens"]},
            "tok_per_s": t["tok_per_s"],
            "decode_tok_per_s": t["decode_tok_per_s"],
        }
        if ss[0]["method"] != "vanilla":
            rounds = sum(s["rounds"] for s in ss)
            out["mean_accepted_length"] = 1 + sum(s["accepted"] for s in ss) / rounds
            # the analytic model per round, with the rounds-weighted round cost of the sources
            cost = sum(s["round_cost_in_target_steps"] * s["rounds"] for s in ss) / rounds
            out["analytic_speedup"] = out["mean_accepted_length"] / cost
            out["vanilla_identical"] = sum(s["vanilla_identical"] for s in ss)
        if all("hf_tok_per_s" in r for r in rows):  # exact where HF's output is ours (hf_identical)
            out["hf_tok_per_s"] = sum(r["new_tokens"] for r in rows) / sum(
                r["new_tokens"] / r["hf_tok_per_s"] for r in rows
            )
        return out

    v, c, t = (pool([r[i] for r in results]) for i in range(3))
    for s in (c, t):
        s["speedup"], s["decode_speedup"] = (
            s["tok_per_s"] / v["tok_per_s"],
            s["decode_tok_per_s"] / v["decode_tok_per_s"],
        )
        s["fraction_of_analytic"] = s["decode_speedup"] / s["analytic_speedup"]
        if "hf_tok_per_s" in s:
            s["speedup_vs_hf"] = s["tok_per_s"] / s["hf_tok_per_s"]
    return v, c, t


def _row(src: str, v: dict, c: dict, t: dict) -> str:
    def cfg(s):
        return (
            "k=" + str(s["method_config"]["shape"]["depth"])
            if s["method"] == "chain"
            else "D={depth},K={width}".format(**s["method_config"]["shape"])
        )

    hf = f"{c['hf_tok_per_s']:.2f}" if "hf_tok_per_s" in c else "–"
    vs_hf = f"{c['speedup_vs_hf']:.2f}×" if "speedup_vs_hf" in c else "–"
    return (
        f"| {src} | {v['total']['prompts']} | {v['tok_per_s']:.2f} | {c['tok_per_s']:.2f} ({cfg(c)}) "
        f"| {c['speedup']:.2f}× | {c['mean_accepted_length']:.2f} | {c['analytic_speedup']:.2f}× "
        f"| {c['fraction_of_analytic']:.2f} | {t['tok_per_s']:.2f} ({cfg(t)}) | {t['speedup']:.2f}× "
        f"| {t['mean_accepted_length']:.2f} | {hf} | {vs_hf} | {c['vanilla_identical']}+{t['vanilla_identical']}"
        f"/{2 * v['total']['prompts']} |"
    )


def table() -> str:
    head = (
        "| prompts | n | vanilla tok/s | chain tok/s | chain speedup | chain mean acc. len | chain analytic "
        "| achieved / analytic (decode) | tree tok/s | tree speedup | tree mean acc. len | HF assisted tok/s "
        "| chain vs HF assisted | identical to vanilla |\n" + "|---" * 14 + "|\n"
    )
    srcs = sorted({p.name[len("spec_") : -len("_vanilla.json")] for p in RESULTS.glob("spec_*_vanilla.json")})
    loaded = {src: r for src in srcs if (r := _load(src)) is not None}
    rows = [_row(src, *(x["summary"] for x in r)) for src, r in loaded.items()]
    cats = [r for src, r in loaded.items() if src.startswith("spec-bench-")]
    if len(cats) > 1:  # Spec-Bench as one set (only the categories measured so far)
        rows.append(_row(f"**spec-bench, {len(cats)} categories pooled**", *_pooled(cats)))
    sweeps = []
    for p in sorted(RESULTS.glob("spec_sweep_*.json")):
        sw = json.loads(p.read_text())
        cells = ", ".join(
            f"{c['method']} {c['method_config']['shape']['depth']}x{c['method_config']['shape']['width']}: "
            f"{c['speedup']:.2f}× (acc. len {c['mean_accepted_length']:.2f}, analytic {c['analytic_speedup']:.2f}×)"
            for c in sw["configs"]
        )
        sweeps.append(f"- sweep on {sw['set']} ({sw['prompts']} prompts): {cells}")
    return head + "\n".join(rows) + "\n\n" + "\n".join(sweeps) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--sets", nargs="+", default=["humaneval", "humaneval-body"], help="humaneval, humaneval-body, spec-bench"
    )
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--sweep-prompts", type=int, default=4)
    ap.add_argument("--per-category", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--no-hf", action="store_true", help="skip HF assisted generation")
    ap.add_argument("--chains", type=int, nargs="+", default=CHAINS, help="chain lengths k to sweep")
    ap.add_argument("--trees", nargs="+", default=[f"{d}x{w}" for d, w in TREES], help="trees DxK to sweep")
    ap.add_argument("--categories", nargs="+", help="Spec-Bench categories to run (default: all 13)")
    ap.add_argument("--resume", action="store_true", help="reuse result files already written (sweep included)")
    ap.add_argument("--no-timing", action="store_true", help="skip the timing-mode pass (draft/verify split)")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.table_only and len(args.sets) > 1:
        # a process per set, as per Spec-Bench category: the HumanEval run with the body set after it in one
        # process was OOM-killed loading the second set's HF pair (24 GiB box)
        for name in args.sets:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    MODULE,
                    "--sets",
                    name,
                    *["--resume"] * args.resume,
                    *_options(args),
                    *(["--categories", *args.categories] if args.categories else []),
                ],
                check=True,
            )
    elif not args.table_only:
        for name in args.sets:
            trees = [tuple(map(int, t.split("x"))) for t in args.trees]
            if name == "spec-bench" and len(sources(name, args.categories)) > 1:
                spec_bench_by_category(args)
            else:
                bench_all(name, args, args.chains, trees)
    md = table()
    (RESULTS / "speculative.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
