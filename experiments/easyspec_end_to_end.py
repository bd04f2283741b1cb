"""EasySpec end to end on one CPU device (issue 13 §4.4): Qwen2.5-Coder-0.5B drafting for the 1.5B, fp32,
greedy, batch 1, 128 new tokens; vanilla, the engine's sequential-draft chain and tree, and the same
chain and tree drafted by EasySpec (N = 4, ATTN_ONLY, every_round calibration). All in one process, the
models loaded once, every ratio from the same run; warm-up and compilation excluded (the `bench` JSON
contract, with `summary.easyspec`). On one device EasySpec cannot gain (its group step reads the same
bytes); the target is that it does not lose more than 5% against the sequential draft.

    python experiments/easyspec_end_to_end.py --source humaneval --limit 10      # ~40 min on the 2-core box

Writes results/easyspec_e2e_<source>_N<parallel>.json (rows per method + the stacked weights' extra memory)."""
from __future__ import annotations

import argparse

from easyspec_data import DRAFT, RESULTS, TARGET, load_pair, log


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="humaneval")
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--chain", type=int, default=7)
    ap.add_argument("--tree", default="5x2")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--calibration", default="every_round")
    args = ap.parse_args()
    import jax

    from jaxspec.bench import run_bench, write_json
    from jaxspec.easyspec import EasySpec
    from jaxspec.speculative import chain, tree

    target, draft = load_pair()
    depth, width = map(int, args.tree.split("x"))
    common = dict(max_new_tokens=args.max_new_tokens, limit=args.limit, loaded=(target, draft), log=log)
    van = run_bench(TARGET, args.source, **common)
    easy = EasySpec(parallel=args.parallel, calibration=args.calibration)
    rows = {"vanilla": van["summary"]}
    for name, meth, drafter in (("chain", chain(args.chain), None), ("easyspec-chain", chain(args.chain), easy),
                                ("tree", tree(depth, width), None), ("easyspec-tree", tree(depth, width), easy)):
        r = run_bench(TARGET, args.source, method=meth, draft=DRAFT, vanilla=van, drafter=drafter, **common)
        rows[name] = r["summary"]
        log(f"{name}: {r['summary']['tok_per_s']:.2f} tok/s, speedup {r['summary']['speedup']:.2f}x, accepted length "
            f"{r['summary']['mean_accepted_length']:.2f}, identical {r['summary']['vanilla_identical']}")
    bound = easy.bind(draft.cfg)
    stacked = bound.prepare(draft.params)["groups"]
    extra = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(stacked))
    draft_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(draft.params))
    out = {"source": args.source, "prompts": args.limit, "rows": rows,
           "ratios": {k: rows[f"easyspec-{k}"]["tok_per_s"] / rows[k]["tok_per_s"] for k in ("chain", "tree")},
           "stacked_group_weight_bytes": extra, "draft_param_bytes": draft_bytes,
           "partition": bound.describe()["partition_text"], "env": van["env"]}
    log(f"easyspec / sequential draft, end to end: {out['ratios']}; stacked weights {extra / 2**20:.0f} MiB "
        f"({extra / draft_bytes:.1%} of the draft)")
    write_json(out, RESULTS / f"easyspec_e2e_{args.source.replace(':', '-')}_N{args.parallel}.json")


if __name__ == "__main__":
    main()
