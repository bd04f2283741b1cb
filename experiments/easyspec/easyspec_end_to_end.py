"""EasySpec end to end on one CPU device (issue 13 §4.4): Qwen2.5-Coder-0.5B drafting for the 1.5B, fp32,
greedy, batch 1, 128 new tokens; vanilla, the engine's sequential-draft chain and tree, and the same
chain and tree drafted by EasySpec (N = 4, ATTN_ONLY, every_round calibration). All in one process, the
models loaded once, every ratio from the same run; warm-up and compilation excluded (the `bench` JSON
contract, with `summary.easyspec`). On one device EasySpec cannot gain (its group step reads the same
bytes); the target is that it does not lose more than 5% against the sequential draft.

    python -m experiments.easyspec.easyspec_end_to_end --source humaneval --limit 10      # ~40 min on the 2-core box

    python -m experiments.easyspec.easyspec_end_to_end --plot-only                          # redraw from the JSONs

Writes experiments/results/easyspec/easyspec_e2e_<source>_N<parallel>.json (rows per method + the stacked
weights' extra memory) and experiments/results/easyspec/easyspec_e2e.png (tok/s of every method, one panel per JSON)."""

from __future__ import annotations

import argparse
import json

from experiments.common.results import write_json
from experiments.easyspec.easyspec_data import DRAFT, RESULTS, TARGET, load_pair, log


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="humaneval")
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--chain", type=int, default=7)
    ap.add_argument("--tree", default="5x2")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--calibration", default="every_round")
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args()
    if args.plot_only:
        return plot()
    import jax

    from jaxspec.bench import run_bench
    from jaxspec.easyspec import EasySpec
    from jaxspec.speculative import chain, tree

    target, draft = load_pair()
    depth, width = map(int, args.tree.split("x"))
    common = dict(max_new_tokens=args.max_new_tokens, limit=args.limit, loaded=(target, draft), log=log)
    van = run_bench(TARGET, args.source, **common)
    easy = EasySpec(parallel=args.parallel, calibration=args.calibration)
    rows = {"vanilla": van["summary"]}
    for name, meth, drafter in (
        ("chain", chain(args.chain), None),
        ("easyspec-chain", chain(args.chain), easy),
        ("tree", tree(depth, width), None),
        ("easyspec-tree", tree(depth, width), easy),
    ):
        r = run_bench(TARGET, args.source, method=meth, draft=DRAFT, vanilla=van, drafter=drafter, **common)
        rows[name] = r["summary"]
        log(
            f"{name}: {r['summary']['tok_per_s']:.2f} tok/s, speedup {r['summary']['speedup']:.2f}x, accepted length "
            f"{r['summary']['mean_accepted_length']:.2f}, identical {r['summary']['vanilla_identical']}"
        )
    bound = easy.bind(draft.cfg)
    stacked = bound.prepare(draft.params)["groups"]
    extra = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(stacked))
    draft_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(draft.params))
    out = {
        "source": args.source,
        "prompts": args.limit,
        "rows": rows,
        "ratios": {k: rows[f"easyspec-{k}"]["tok_per_s"] / rows[k]["tok_per_s"] for k in ("chain", "tree")},
        "stacked_group_weight_bytes": extra,
        "draft_param_bytes": draft_bytes,
        "partition": bound.describe()["partition_text"],
        "env": van["env"],
    }
    log(
        f"easyspec / sequential draft, end to end: {out['ratios']}; stacked weights {extra / 2**20:.0f} MiB "
        f"({extra / draft_bytes:.1%} of the draft)"
    )
    write_json(out, RESULTS / f"easyspec_e2e_{args.source.replace(':', '-')}_N{args.parallel}.json")
    plot()


def plot() -> None:
    """One panel per easyspec_e2e_*.json: tok/s per method (vanilla grey, sequential draft blue, EasySpec
    orange), each bar labelled with its speedup over vanilla and its mean accepted length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = sorted(RESULTS.glob("easyspec_e2e_*.json"))
    fig, axes = plt.subplots(1, len(paths), figsize=(4.2 * len(paths), 3.8), squeeze=False)
    for ax, path in zip(axes[0], paths):
        d = json.loads(path.read_text())
        names = list(d["rows"])
        tps = [d["rows"][n]["tok_per_s"] for n in names]
        colors = ["gray" if n == "vanilla" else "tab:orange" if n.startswith("easyspec") else "tab:blue" for n in names]
        bars = ax.bar(range(len(names)), tps, color=colors)
        for b, n in zip(bars, names):
            r = d["rows"][n]
            text = "1.00x" if n == "vanilla" else f"{r['speedup']:.2f}x\nτ {r['mean_accepted_length']:.2f}"
            ax.text(b.get_x() + b.get_width() / 2, b.get_height(), text, ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("tokens/s")
        ax.set_ylim(0, max(tps) * 1.25)
        n = path.stem.rsplit("_N", 1)[1]
        ax.set_title(f"EasySpec N = {n}: {d['source']}, {d['prompts']} prompts", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        "EasySpec vs the sequential draft, end to end: 0.5B drafts for 1.5B, one CPU device, fp32, batch 1", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(RESULTS / "easyspec_e2e.png", dpi=120)
    log(f"wrote {RESULTS / 'easyspec_e2e.png'}")


if __name__ == "__main__":
    main()
