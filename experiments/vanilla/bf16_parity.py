"""bf16 on this CPU (issue 15 §1): speed against fp32, and how often bf16 greedy output differs — speculative
from bf16 vanilla (verification reads a block where a vanilla step reads one token: another kernel, so a
near-tie could flip), bf16 vanilla from HF torch in bf16, and bf16 from fp32.

Per model, one process, models loaded once: vanilla fp32, vanilla bf16 (with HF's bf16 `generate` on the same
ids), LayerSkip (exit ~0.8 L, chain of 4) and DEL in bf16, each compared token by token with bf16 vanilla.

    python -m experiments.vanilla.bf16_parity                                 # SmolLM2 and Qwen-0.5B, ~25 min here
    python -m experiments.vanilla.bf16_parity --plot-only

Writes experiments/results/vanilla/bf16_parity_<model>.json (the bench summaries, per-prompt agreement and the
first position where two outputs differ) and experiments/results/vanilla/bf16_parity.png."""

from __future__ import annotations

import argparse
import json

from experiments.common.paths import results_dir
from experiments.common.results import write_json

RESULTS = results_dir("vanilla")
MODELS = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position where two outputs differ (the shorter one's end counts), None when identical."""
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def agreement(rows_a: list[dict], rows_b: list[dict]) -> dict:
    diffs = [first_difference(a["output_ids"], b["output_ids"]) for a, b in zip(rows_a, rows_b)]
    tokens = sum(len(a["output_ids"]) for a in rows_a)
    return {
        "identical": sum(d is None for d in diffs),
        "prompts": len(diffs),
        "first_difference": diffs,
        "tokens": tokens,
    }


def run_model(model: str, source: str, limit: int, n: int, log) -> dict:
    from conversion.loader import load_model
    from jaxspec.bench import run_bench
    from jaxspec.selfspec import DEL, LayerSkip
    from jaxspec.speculative import chain

    m32, m16 = load_model(model, dtype="float32"), load_model(model, dtype="bfloat16")
    common = dict(max_new_tokens=n, limit=limit, log=log)
    van32 = run_bench(model, source, loaded=(m32, None), **common)
    van16 = run_bench(model, source, loaded=(m16, None), hf_baseline=True, **common)
    exit_layer = round(0.8 * m16.cfg.num_layers)
    ls16 = run_bench(
        model, source, loaded=(m16, None), method=chain(4), drafter=LayerSkip(exit_layer), vanilla=van16, **common
    )
    del16 = run_bench(model, source, loaded=(m16, None), method=chain(18), drafter=DEL(), vanilla=van16, **common)
    out = {
        "model": model,
        "source": source,
        "prompts": limit,
        "max_new_tokens": n,
        "ls_exit_layer": exit_layer,
        "tok_per_s": {
            "vanilla_f32": van32["summary"]["tok_per_s"],
            "vanilla_bf16": van16["summary"]["tok_per_s"],
            "hf_bf16": van16["summary"]["hf_tok_per_s"],
            "ls_bf16": ls16["summary"]["tok_per_s"],
            "del_bf16": del16["summary"]["tok_per_s"],
        },
        "decode_tok_per_s": {
            "vanilla_f32": van32["summary"]["decode_tok_per_s"],
            "vanilla_bf16": van16["summary"]["decode_tok_per_s"],
        },
        "bf16_vs_f32": agreement(van16["prompts"], van32["prompts"]),
        "hf_bf16_identical": van16["summary"]["hf_identical"],
        "ls_vs_bf16_vanilla": agreement(ls16["prompts"], van16["prompts"]),
        "del_vs_bf16_vanilla": agreement(del16["prompts"], van16["prompts"]),
        "ls_acceptance": ls16["summary"]["acceptance_rate"],
        "del_acceptance": del16["summary"]["acceptance_rate"],
        "summaries": {
            "vanilla_f32": van32["summary"],
            "vanilla_bf16": van16["summary"],
            "ls_bf16": ls16["summary"],
            "del_bf16": del16["summary"],
        },
        "env": van16["env"],
    }
    log(
        f"{model}: bf16 {out['tok_per_s']['vanilla_bf16']:.2f} vs f32 {out['tok_per_s']['vanilla_f32']:.2f} tok/s; "
        f"bf16==f32 {out['bf16_vs_f32']['identical']}/{limit}, bf16==HF bf16 {out['hf_bf16_identical']}/{limit}, "
        f"LS==bf16 vanilla {out['ls_vs_bf16_vanilla']['identical']}/{limit}, "
        f"DEL==bf16 vanilla {out['del_vs_bf16_vanilla']['identical']}/{limit}"
    )
    return out


def plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("bf16_parity_*.json"))]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    keys = ["vanilla_f32", "vanilla_bf16", "hf_bf16", "ls_bf16", "del_bf16"]
    w = 0.8 / max(1, len(runs))
    for i, r in enumerate(runs):
        axes[0].bar([k + i * w for k in range(len(keys))], [r["tok_per_s"][k] for k in keys], w, label=r["model"])
        agree = [
            r["bf16_vs_f32"]["identical"],
            r["hf_bf16_identical"],
            r["ls_vs_bf16_vanilla"]["identical"],
            r["del_vs_bf16_vanilla"]["identical"],
        ]
        axes[1].bar([k + i * w for k in range(4)], [a / r["prompts"] for a in agree], w, label=r["model"])
    axes[0].set_xticks(range(len(keys)), keys, rotation=20)
    axes[0].set_ylabel("tok/s (end to end, this CPU)")
    axes[1].set_xticks(
        range(4), ["bf16 = f32", "bf16 = HF bf16", "LS bf16 = vanilla", "DEL bf16 = vanilla"], rotation=20
    )
    axes[1].set_ylabel("share of prompts with identical output")
    axes[1].set_ylim(0, 1.05)
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "bf16_parity.png", dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--source", default="humaneval")
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args()
    if args.plot_only:
        return plot()

    def log(s):
        print(s, flush=True)

    for model in args.models:
        out = run_model(model, args.source, args.limit, args.max_new_tokens, log)
        write_json(out, RESULTS / f"bf16_parity_{model}.json")
    plot()


if __name__ == "__main__":
    main()
