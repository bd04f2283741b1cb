"""Vanilla decoding benchmark (issue 2, §8): Qwen2.5-Coder-1.5B and 0.5B, fp32, 20 HumanEval prompts,
128 new tokens, greedy; jaxspec vs HF torch `generate` in the same run, identical-output count,
compile time, achieved weight-read bandwidth against the machine's measured read bandwidth.

    python -m experiments.vanilla.bench_vanilla                 # both models (~35 min on the 2-core CPU box)
    python -m experiments.vanilla.bench_vanilla --table-only    # rebuild the markdown table from the JSON

Each model runs in its own `python -m jaxspec bench` process (so one model's memory is freed before
the next); results land in experiments/results/vanilla/vanilla_<model>_<device>.json (stamped with the
`bench` command line and the commit) and vanilla.md."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from experiments.common.paths import results_dir
from experiments.common.results import stamp

RESULTS = results_dir("vanilla")
MODELS = ["qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"]


def run(model: str, n: int, tokens: int, tag: str) -> Path:
    out = RESULTS / f"vanilla_{model}_{tag}.json"
    cmd = [
        sys.executable,
        "-m",
        "jaxspec",
        "bench",
        "--model",
        model,
        "--prompts",
        "humaneval-raw",
        "--limit",
        str(n),
        "--max-new-tokens",
        str(tokens),
        "--json",
        str(out),
        "--hf-baseline",
        "--measure-bandwidth",
    ]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)
    stamp(out, "python " + " ".join(cmd[1:]))
    return out


def table(paths: list[Path]) -> str:
    head = (
        "| model | device | prompts × tokens | jaxspec tok/s (decode) | HF torch tok/s | speedup | identical "
        "| compile s | prefill s | weights GB | achieved GB/s | machine GB/s | of bound |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for p in paths:
        r = json.loads(p.read_text())
        s, env = r["summary"], r["env"]
        rows.append(
            f"| {s['model']} | {env['device']} ({env['cpu_count']} cores) | {s['total']['prompts']} × "
            f"{s['max_new_tokens']} | {s['tok_per_s']:.2f} ({s['decode_tok_per_s']:.2f}) | {s['hf_tok_per_s']:.2f} "
            f"| {s['speedup_vs_hf']:.2f}× | {s['hf_identical']}/{s['total']['prompts']} | {s['compile_s']:.1f} "
            f"| {s['prefill_s']:.1f} | {s['weight_bytes'] / 1e9:.2f} | {s['read_gb_per_s']:.1f} "
            f"| {s['machine_read_gb_per_s']:.1f} | {s['fraction_of_bound']:.2f} |"
        )
    return head + "\n".join(rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--tag", default="cpu", help="device tag in the file names (cpu, h100, ...)")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        for m in args.models:
            run(m, args.prompts, args.max_new_tokens, args.tag)
    paths = sorted(RESULTS.glob("vanilla_*.json"))
    md = table(paths)
    (RESULTS / "vanilla.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
