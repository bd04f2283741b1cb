"""DEL against its baselines on models that were not trained for early exit (issue 14 §5), one CPU device,
fp32, greedy, batch 1: vanilla, LS (static exit E, chain γ), FS (E, γ ±1), DV (E, adapted confidence
stop), DEL (the default: its round cost measured on this machine, round_cost.py, read from the disk cache
when this machine measured it before), DEL under the official layer count (`--layers`), with the LM head
added by its weights (`--weights`), and DEL `faithful` (the official quirks), optionally HF's `assistant_early_exit` —
every method on the same prompts in one process, interleaved prompt by prompt, best of `--repeats` per prompt
and method (experiments/common/interleaved.py), compile and warm-up excluded (the `bench` contract).
eTPL = Σ(accepted + 1) / Σ(E·drafted + L) over rounds (a plain step costs L); DEL's from its per-round traces.

    python -m experiments.selfspec.del_selfspec run --model smollm2-135m-instruct --layers \
        --ls 29:1 --fs 24:2 --dv 24 --hf-exit 24 28
    python -m experiments.selfspec.del_selfspec sweep --model smollm2-135m-instruct --exits 8,16,22,26,28,29 \
        --gammas 1,2,4,6
    python -m experiments.selfspec.del_costs --model qwen2.5-coder-1.5b-instruct      # DEL's overheads (del_costs.py)
    python -m experiments.selfspec.del_selfspec plot                                          # redraw every PNG

Writes experiments/results/selfspec/del_<model><tag>.json (+ .png: speedup per set and method, DEL's exit and τ over
rounds), experiments/results/selfspec/del_sweep_<model><tag>.json (+ .png: speedup contour over (E, γ), as the official
sweep.py, with the default DEL's on the same prompts) and
experiments/results/selfspec/del_costs_<model>.json."""

from __future__ import annotations

import argparse
import json
import time

from experiments.common import interleaved
from experiments.common.paths import results_dir
from experiments.common.results import log, write_json

RESULTS = results_dir("selfspec")
SETS = (
    "humaneval:20",
    "spec-bench:summarization:10",
    "spec-bench:math_reasoning:10",
    "spec-bench:translation:10",
    "spec-bench:qa:10",
)


def parse_set(spec: str) -> tuple[str, int]:
    """SOURCE:LIMIT -> (source, limit)."""
    source, limit = spec.rsplit(":", 1)
    return source, int(limit)


def _etpl(summary: dict, rows: list[dict], layers: int, exit_layer: int | None) -> float:
    """Tokens per layer run: DEL from its traces, a static exit from the totals, vanilla 1/L."""
    if "exit_layers" in summary:
        tok = cost = 0.0
        for r in rows:
            tr = r["drafter"]
            tok += sum(a + 1 for a in tr["accepted"])
            cost += sum(e * d + layers for e, d in zip(tr["exit_layer"], tr["drafted"]))
        return tok / cost
    if exit_layer is None:
        return 1 / layers
    return (summary["accepted"] + summary["rounds"]) / (exit_layer * summary["drafted"] + layers * summary["rounds"])


def _methods(args, L: int):
    from jaxspec.selfspec import DEL, FSM, DraftVerify, LayerSkip
    from jaxspec.speculative import chain

    kw = dict(probe=args.probe, probe_exits=args.probe_exits, context=args.context)
    head = {} if args.head_cost is None else dict(head_cost=args.head_cost)  # a head cost: the layer count
    out = [] if args.no_del else [("del", chain(18), DEL(**head, **kw), None)]
    for c in args.also_context:  # the default cost model with another seeding (an ablation)
        out.append((f"del-context-{c}", chain(18), DEL(**head, **dict(kw, context=c)), None))
    if args.layers:
        out.append(("del-layers", chain(18), DEL(cost="layers", **kw), None))  # the official count
    if args.weights:
        out.append(("del-weights", chain(18), DEL(head_cost="weights", **kw), None))  # + the head by its weights
    if not args.no_faithful:
        out.append(("del-faithful", chain(18), DEL(faithful=True, context=32), None))  # + the official seeding
    for spec in args.ls:
        e, g = map(int, spec.split(":"))
        out.append((f"ls-E{e}-g{g}", chain(g), LayerSkip(e), e))
    for spec in args.fs:
        e, g = map(int, spec.split(":"))
        out.append((f"fs-E{e}-g{g}", chain(18), FSM(e, start=g), e))
    for e in args.dv:
        out.append((f"dv-E{e}", chain(18), DraftVerify(int(e)), int(e)))
    return out


def _measure_set(m, spec: str, ids, methods, repeats: int, max_new_tokens: int, eos) -> tuple[dict, dict, dict]:
    """Vanilla and `methods` on one set's prompts, interleaved prompt by prompt (experiments/common/interleaved.py),
    best of `repeats`: vanilla with its own cache size, the speculative methods with theirs (one
    verification block more). Returns the table (name → summary), DEL's first traces and each runner's
    cache slots and measured round cost."""
    from jaxspec.decode import cache_slots
    from jaxspec.speculative import make_runner

    L, N = m.cfg.num_layers, max_new_tokens
    longest = max(map(len, ids))
    kw = dict(max_new_tokens=N, eos_ids=eos)
    runners = {"vanilla": make_runner(m, None, None, max_len=cache_slots(longest + N), **kw)}
    for name, meth, drafter, _ in methods:
        t0 = time.perf_counter()  # DEL's measured cost: timed here (or read) at this set's cache size
        runners[name] = make_runner(
            m,
            None,
            meth,
            max_len=cache_slots(longest + N + meth.shape.nodes + 1),
            drafter=drafter,
            measure_costs=True,
            **kw,
        )
        cost = runners[name].spec.drafter.describe().get("cost")
        if isinstance(cost, dict):
            log(f"[{spec}] {name}: round cost measured or read in {time.perf_counter() - t0:.0f}s: {json.dumps(cost)}")
    compile_s = interleaved.prepare(runners, ids)
    log(f"[{spec}] {len(ids)} prompts, compiled {list(runners)}")
    rows = interleaved.measure(runners, ids, repeats, log)
    table, traces = {"vanilla": dict(interleaved.summary(rows["vanilla"]), speedup=1.0, etpl=1 / L)}, {}
    for name, _, _, e in methods:
        s = interleaved.summary(rows[name], rows["vanilla"])
        if "drafter" in rows[name][0]:
            s["exit_layers"] = _exit_shares(rows[name])
            traces[name] = [r["drafter"] for r in rows[name][:3]]
        s["etpl"] = _etpl(s, rows[name], L, e)
        s["compile_s"] = compile_s[name]
        table[name] = {k: v for k, v in s.items() if k not in ("per_position", "histogram")}
        log(
            f"[{spec}] {name}: {s['speedup']:.3f}x (decode {s['decode_speedup']:.3f}x, prefill "
            f"{s['prefill_ratio']:.2f}x), acceptance {s['acceptance_rate'] or 0:.2f}, eTPL {s['etpl']:.4f}, "
            f"identical {s['vanilla_identical']}/{len(ids)}"
        )
    info = {
        "cache_slots": {n: r.spec.max_len for n, r in runners.items()},
        "round_cost": {
            n: c
            for n, r in runners.items()
            if n != "vanilla" and isinstance(c := r.spec.drafter.describe().get("cost"), dict)
        },
    }
    return table, traces, info


def cmd_run(args) -> None:
    """Every method on the same prompts, interleaved prompt by prompt (`_measure_set`), set by set."""
    from conversion.loader import load_model
    from conversion.tokenizer import eos_ids
    from jaxspec.bench import environment
    from jaxspec.prompts import encode, load_prompts

    m = load_model(args.model)
    L, N, eos = m.cfg.num_layers, args.max_new_tokens, eos_ids(m.tokenizer, m.cfg)
    out = {
        "model": args.model,
        "layers": L,
        "max_new_tokens": N,
        "repeats": args.repeats,
        "measurement": "interleaved, best of repeats per prompt and method",
        "sets": {},
        "env": environment(),
    }
    sets = {spec: [encode(m.tokenizer, p) for p in load_prompts(*parse_set(spec))] for spec in args.sets}
    path = RESULTS / f"del_{args.model}{args.tag}.json"
    for spec, ids in sets.items():
        table, traces, info = _measure_set(m, spec, ids, _methods(args, L), args.repeats, N, eos)
        if args.hf_exit and spec == args.sets[0]:
            table["hf_early_exit"] = _hf_early_exit(m, ids, args.hf_exit, N, eos, args.hf_repeats, table["vanilla"])
        out["sets"][spec] = {"rows": table, "del_traces": traces, **info}
        write_json(out, path)  # after every set: a crash keeps what was measured
    plot()


def _hf_early_exit(m, ids, exits, max_new_tokens: int, eos, repeats: int, jax_vanilla: dict) -> dict:
    """HF's `assistant_early_exit=E` (transformers' defaults: 20 assistant tokens, 0.4 confidence stop)
    beside HF's plain greedy `generate` on the same prompts, interleaved prompt by prompt, best of
    `repeats`: the ratio that compares the method, not the two implementations (HF eager torch and
    jaxspec's jitted loop differ several-fold on this CPU), and the ratio to jaxspec's vanilla."""
    from jaxspec.hf_reference import assistant_settings, hf_generate, load_hf_model

    hf = load_hf_model(m.source, "float32")
    names = ["hf-vanilla"] + [f"hf-exit-{e}" for e in exits]
    how = {"hf-vanilla": {}, **{f"hf-exit-{e}": {"early_exit": e} for e in exits}}
    hf_generate(hf, ids[0], min(8, max_new_tokens), eos)  # warm-up, not timed
    rows = {n: [None] * len(ids) for n in names}
    for rep in range(repeats):
        for j, pid in enumerate(ids):
            s = (j + rep) % len(names)
            for n in names[s:] + names[:s]:
                out, dt = hf_generate(hf, pid, max_new_tokens, eos, **how[n])
                if rows[n][j] is None or dt < rows[n][j][1]:
                    rows[n][j] = (out, dt)
                log(f"  {n} prompt {j}: {len(out)} tokens, {len(out) / dt:.2f} tok/s")
    tps = {n: sum(len(o) for o, _ in rows[n]) / sum(dt for _, dt in rows[n]) for n in names}
    res = {
        "prompts": len(ids),
        "repeats": repeats,
        "hf_settings": assistant_settings(hf),
        "hf_vanilla_tok_per_s": tps["hf-vanilla"],
        "hf_vanilla_vs_jaxspec_vanilla": tps["hf-vanilla"] / jax_vanilla["tok_per_s"],
        "exits": {},
    }
    for e in exits:
        n = f"hf-exit-{e}"
        res["exits"][str(e)] = {
            "tok_per_s": tps[n],
            "speedup_vs_hf_vanilla": tps[n] / tps["hf-vanilla"],
            "speedup_vs_jaxspec_vanilla": tps[n] / jax_vanilla["tok_per_s"],
            "identical_to_hf_vanilla": sum(a[0] == b[0] for a, b in zip(rows[n], rows["hf-vanilla"])),
        }
        log(
            f"HF early exit {e}: {tps[n]:.2f} tok/s, {tps[n] / tps['hf-vanilla']:.3f}x HF vanilla "
            f"({tps['hf-vanilla']:.2f} tok/s), {tps[n] / jax_vanilla['tok_per_s']:.3f}x jaxspec vanilla"
        )
    return res


def _exit_shares(rows: list[dict]) -> dict:
    from collections import Counter

    exits = Counter(e for r in rows for e in r["drafter"]["exit_layer"])
    n = sum(exits.values())
    drafted = [d for r in rows for d in r["drafter"]["drafted"]]
    return {
        "share": {str(e): c / n for e, c in sorted(exits.items())},
        "rounds": n,
        "mean_drafted": sum(drafted) / len(drafted) if drafted else None,
    }


def cmd_sweep(args) -> None:
    """LS over (E, γ) on one prompt set (official sweep.py), with vanilla and the default DEL on the same
    prompts, all interleaved prompt by prompt, best of `--repeats` (`_measure_set`): speedup, acceptance
    and eTPL per cell."""
    from conversion.loader import load_model
    from conversion.tokenizer import eos_ids
    from jaxspec.bench import environment
    from jaxspec.prompts import encode, load_prompts
    from jaxspec.selfspec import DEL, LayerSkip
    from jaxspec.speculative import chain

    m = load_model(args.model)
    L, N = m.cfg.num_layers, args.max_new_tokens
    ids = [encode(m.tokenizer, p) for p in load_prompts(*parse_set(args.set))]
    grid = [(e, g) for e in map(int, args.exits.split(",")) for g in map(int, args.gammas.split(","))]
    methods = [] if args.no_del else [("del", chain(18), DEL(), None)]
    methods += [(f"ls-E{e}-g{g}", chain(g), LayerSkip(e), e) for e, g in grid]
    table, _, info = _measure_set(m, args.set, ids, methods, args.repeats, N, eos_ids(m.tokenizer, m.cfg))
    pick = ("tok_per_s", "speedup", "decode_speedup", "acceptance_rate", "etpl", "vanilla_identical")
    cells = [{"exit_layer": e, "gamma": g, **{k: table[f"ls-E{e}-g{g}"][k] for k in pick}} for e, g in grid]
    write_json(
        {
            "model": args.model,
            "set": args.set,
            "max_new_tokens": N,
            "layers": L,
            "repeats": args.repeats,
            "measurement": "interleaved, best of repeats per prompt and method",
            "vanilla_tok_per_s": table["vanilla"]["tok_per_s"],
            "cells": cells,
            "del": {k: table["del"][k] for k in pick} if "del" in table else None,
            "round_cost": info["round_cost"],
            "env": environment(),
        },
        RESULTS / f"del_sweep_{args.model}{args.tag}.json",
    )
    plot()


def plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    for path in sorted(RESULTS.glob("del_*.json")):
        d = json.loads(path.read_text())
        if path.name.startswith("del_sweep_"):
            es = sorted({c["exit_layer"] for c in d["cells"]})
            gs = sorted({c["gamma"] for c in d["cells"]})
            z = np.full((len(gs), len(es)), np.nan)
            for c in d["cells"]:
                z[gs.index(c["gamma"]), es.index(c["exit_layer"])] = c["speedup"]
            fig, ax = plt.subplots(figsize=(6, 4.2))
            if min(z.shape) >= 2:
                cs = ax.contourf(es, gs, z, levels=12, cmap="viridis")
                ax.contour(es, gs, z, levels=[1.0], colors="white", linewidths=1.5)
            else:  # a line of cells: no contour to draw
                cs = ax.scatter(
                    [c["exit_layer"] for c in d["cells"]],
                    [c["gamma"] for c in d["cells"]],
                    c=[c["speedup"] for c in d["cells"]],
                    s=200,
                    cmap="viridis",
                )
            fig.colorbar(cs, label="speedup over vanilla (white: 1.0)")
            ax.set_xlabel("exit layer E"), ax.set_ylabel("γ (drafts per round)")
            best = max(d["cells"], key=lambda c: c["speedup"])
            ax.plot(best["exit_layer"], best["gamma"], "w*", markersize=12)
            extra = f"; DEL {d['del']['speedup']:.2f}x" if d.get("del") else ""
            ax.set_title(
                f"LS sweep, {d['model']} ({d['set']}, {d['max_new_tokens']} tokens)\nbest (*) "
                f"E{best['exit_layer']} γ{best['gamma']} {best['speedup']:.2f}x{extra}",
                fontsize=9,
            )
        elif "sets" in d:
            sets = list(d["sets"])
            names = [n for n in d["sets"][sets[0]]["rows"] if n != "hf_early_exit"]
            fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
            ax = axes[0]
            w = 0.8 / len(names)
            for i, n in enumerate(names):
                ys = [d["sets"][s]["rows"].get(n, {}).get("speedup") or np.nan for s in sets]
                ax.bar(np.arange(len(sets)) + i * w, ys, w, label=n)
            ax.axhline(1.0, color="k", lw=0.8), ax.axhline(0.95, color="r", lw=0.6, ls="--")
            ax.set_xticks(np.arange(len(sets)) + 0.4, [s.split(":")[-2] for s in sets], fontsize=8)
            ax.set_ylabel("speedup over vanilla"), ax.legend(fontsize=7, ncol=2)
            ax.set_title(f"{d['model']} ({d['layers']} layers), {d['max_new_tokens']} tokens", fontsize=9)
            ax, ax2 = axes[1], axes[1].twinx()
            for name, c in (
                ("del", "tab:blue"),
                ("del-weights", "tab:purple"),
                ("del-measured", "tab:green"),
                ("del-layers", "tab:cyan"),
                ("del-faithful", "tab:orange"),
            ):
                xs = 0  # every stored trace (3 prompts per set) one after another
                for s in sets:
                    for t in d["sets"][s]["del_traces"].get(name, []):
                        r = range(xs, xs + len(t["exit_layer"]))
                        ax.step(
                            r,
                            t["exit_layer"],
                            color=c,
                            where="post",
                            lw=1,
                            label=f"{name}: exit (0 = plain step)" if xs == 0 else None,
                        )
                        ax2.plot(r, t["tau"], color=c, ls=":", lw=1, label=f"{name}: τ" if xs == 0 else None)
                        xs += len(t["exit_layer"])
                        if name == "del":
                            ax.axvline(xs, color="0.85", lw=0.5)
            ax.set_xlabel("round (3 prompts per set, sets in order)"), ax.set_ylabel("exit layer in effect")
            ax2.set_ylabel("τ (dotted)")
            ax.legend(fontsize=7, loc="upper left"), ax2.legend(fontsize=7, loc="upper right")
        else:
            continue
        fig.tight_layout()
        fig.savefig(path.with_suffix(".png"), dpi=120)
        plt.close(fig)
        log(f"wrote {path.with_suffix('.png')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--model", required=True)
    r.add_argument("--sets", nargs="+", default=list(SETS), help="SOURCE:LIMIT, e.g. spec-bench:qa:10")
    r.add_argument("--max-new-tokens", type=int, default=64)
    r.add_argument("--ls", nargs="*", default=[], help="E:γ")
    r.add_argument("--fs", nargs="*", default=[], help="E:γ0")
    r.add_argument("--dv", nargs="*", default=[], help="E")
    r.add_argument("--head-cost", type=float, default=None, help="DEL's LM head in layers (then the layer count)")
    r.add_argument(
        "--weights", action="store_true", help="also DEL with the LM head priced by its weights (head_cost='weights')"
    )
    r.add_argument("--probe", type=int, default=32, help="DEL: the longest gap between probes while plain")
    r.add_argument("--probe-exits", type=int, default=2, help="DEL: exits a probe observes (0: all)")
    r.add_argument(
        "--context",
        type=int,
        default=None,
        help="DEL: prompt positions seeding the statistics "
        "(default: DEL's, 8 under the layer count, 1 under a measured cost)",
    )
    r.add_argument(
        "--also-context",
        type=int,
        nargs="*",
        default=[],
        help="also DEL seeding from N prompt positions (rows del-context-N)",
    )
    r.add_argument("--no-faithful", action="store_true", help="skip DEL faithful (the official quirks)")
    r.add_argument("--no-del", action="store_true", help="skip DEL with the default cost model")
    r.add_argument("--layers", action="store_true", help="also DEL under the official layer count (cost='layers')")
    r.add_argument("--repeats", type=int, default=2, help="runs per prompt and method (the best counts)")
    r.add_argument("--tag", default="", help="suffix of the result file name")
    r.add_argument(
        "--hf-exit",
        type=int,
        nargs="*",
        default=[],
        help="also HF assistant_early_exit=E (each E) beside HF's own greedy decoding, on the first set",
    )
    r.add_argument("--hf-repeats", type=int, default=1, help="HF runs per prompt and method (the best counts)")
    s = sub.add_parser("sweep")
    s.add_argument("--model", required=True)
    s.add_argument("--set", default="humaneval:5")
    s.add_argument("--exits", required=True)
    s.add_argument("--gammas", default="1,2,4,6")
    s.add_argument("--max-new-tokens", type=int, default=48)
    s.add_argument("--repeats", type=int, default=2, help="runs per prompt and method (the best counts)")
    s.add_argument("--no-del", action="store_true", help="LS cells and vanilla only")
    s.add_argument("--tag", default="", help="suffix of the result file name")
    c = sub.add_parser("costs")
    c.add_argument("--model", required=True)
    sub.add_parser("plot")
    args = ap.parse_args()
    if args.cmd == "costs":  # the measurement lives in del_costs.py; this command name stays valid
        from experiments.selfspec.del_costs import cmd_costs

        return cmd_costs(args)
    {"run": cmd_run, "sweep": cmd_sweep, "plot": lambda a: plot()}[args.cmd](args)


if __name__ == "__main__":
    main()
