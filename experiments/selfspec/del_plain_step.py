"""DEL's plain decoding vs vanilla decoding, per step, every repeat kept (issue 14: is DEL's plain phase —
`engine._plain_step` in a `while_loop`, probes every 2..32 rounds — slower than vanilla's loop?).

    python -m experiments.selfspec.del_plain_step --model qwen2.5-coder-1.5b-instruct \
        --sets spec-bench:math_reasoning:2 spec-bench:qa:2 humaneval:2 --repeats 6

For each prompt: vanilla and DEL (default settings, chain(18)) alternate, `--repeats` runs each, 48 new
tokens; per run the decode time per step (prefill apart). Reports per prompt the min and median of
each method and their ratios, and the spread of one method's runs (what a best-of-2 comparison of two
2-prompt sets cannot see past). Writes experiments/results/selfspec/del_plain_step_<model>.json."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from experiments.common.paths import results_dir
from experiments.common.results import log, write_json
from experiments.selfspec.del_selfspec import parse_set

RESULTS = results_dir("selfspec")


def measure(model: str, sets, repeats: int, N: int) -> dict:
    import jax

    from conversion.loader import load_model
    from conversion.tokenizer import eos_ids
    from jaxspec.decode import cache_slots
    from jaxspec.prompts import encode, load_prompts
    from jaxspec.selfspec import DEL
    from jaxspec.speculative import chain, make_runner

    m = load_model(model)
    eos = eos_ids(m.tokenizer, m.cfg)
    out = {}
    for spec in sets:
        ids = [encode(m.tokenizer, p) for p in load_prompts(*parse_set(spec))]
        longest, meth = max(map(len, ids)), chain(18)
        runners = {
            "vanilla": make_runner(m, None, None, max_len=cache_slots(longest + N), max_new_tokens=N, eos_ids=eos),
            "del": make_runner(
                m,
                None,
                meth,
                max_len=cache_slots(longest + N + meth.shape.nodes + 1),
                drafter=DEL(),
                max_new_tokens=N,
                eos_ids=eos,
                measure_costs=True,
            ),
        }
        for r in runners.values():
            for i in ids:
                r.compile([i])
            r.warmup([[i] for i in ids])
        times = {n: [[] for _ in ids] for n in runners}
        for rep in range(repeats):
            for j, pid in enumerate(ids):
                for n in list(runners) if (rep + j) % 2 == 0 else list(runners)[::-1]:
                    res = runners[n].run([pid], jax.random.key(j))
                    times[n][j].append(res.decode_s / (len(res.output_ids[0]) - 1) * 1e3)
        out[spec] = times
        for j in range(len(ids)):
            v, d = times["vanilla"][j], times["del"][j]
            log(
                f"{spec} #{j}: ms/step vanilla min {min(v):.1f} med {statistics.median(v):.1f} | del min {min(d):.1f} "
                f"med {statistics.median(d):.1f}"
            )
    return out


def summarize(times: dict) -> dict:
    rows = []
    for spec, t in times.items():
        for j, (v, d) in enumerate(zip(t["vanilla"], t["del"])):
            rows.append(
                {
                    "set": spec,
                    "prompt": j,
                    "vanilla_min_ms": min(v),
                    "del_min_ms": min(d),
                    "vanilla_median_ms": statistics.median(v),
                    "del_median_ms": statistics.median(d),
                    "ratio_min": min(d) / min(v),
                    "ratio_median": statistics.median(d) / statistics.median(v),
                    "vanilla_spread": max(v) / min(v) - 1,
                    "del_spread": max(d) / min(d) - 1,
                }
            )
    mean = lambda k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
    return {
        "prompts": rows,
        "mean_ratio_min": mean("ratio_min"),
        "mean_ratio_median": mean("ratio_median"),
        "mean_spread": (mean("vanilla_spread") + mean("del_spread")) / 2,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--sets", nargs="+", default=["spec-bench:math_reasoning:2", "spec-bench:qa:2", "humaneval:2"])
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--times", default=None, help="summarise a saved {set: {method: [[ms per run] per prompt]}} file")
    args = ap.parse_args()
    times = (
        json.loads(Path(args.times).read_text())
        if args.times
        else measure(args.model, args.sets, args.repeats, args.max_new_tokens)
    )
    s = summarize(times)
    log(
        f"DEL / vanilla per step over {len(s['prompts'])} prompts: "
        f"best-of-runs ratio {s['mean_ratio_min']:.3f}, median "
        f"ratio {s['mean_ratio_median']:.3f}; one method's runs spread {s['mean_spread']:.0%} (max/min - 1)"
    )
    from jaxspec.bench import environment

    write_json(
        {
            "model": args.model,
            "repeats": args.repeats,
            "max_new_tokens": args.max_new_tokens,
            "times_ms": times,
            **s,
            "env": environment(),
        },
        RESULTS / f"del_plain_step_{args.model}.json",
    )


if __name__ == "__main__":
    main()
