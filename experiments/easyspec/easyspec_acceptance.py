"""EasySpec acceptance (issue 13 §4.1 and §4.3; paper Figure 4 and Table 5 analogues): acceptance rate and
mean accepted length of Qwen2.5-Coder-0.5B drafting for the 1.5B, greedy, over layer-parallel size
N ∈ {1..5} × calibration × tree width × policy.

Acceptance does not depend on the hardware. Under greedy decoding it does not need the target in the
loop either: every round is verified against the target's greedy continuation of the prompt (generated
once, batched; `jaxspec.speculative.oracle`), which reproduces the engine's rounds exactly — the script
re-runs `--check-real` configurations through the real engine and requires identical statistics. N = 1
is the plain sequential draft (no groups: bit-identical to DraftModel).

    python -m experiments.easyspec.easyspec_acceptance --source humaneval --limit 20          # the full grid
    python -m experiments.easyspec.easyspec_acceptance --source humaneval-body --parallel 1 4 \
        --calibrations every_round \
        --widths 1 4 --policies attn_only direct_mlp
    python -m experiments.easyspec.easyspec_acceptance --plot-only

Writes experiments/results/easyspec/easyspec_acceptance.json (one row per source × configuration, each with its
command line and commit; --resume keeps rows already there), easyspec_acceptance.md and .png beside it."""

from __future__ import annotations

import argparse
import json
import time

import jax

from experiments.common.results import provenance, write_json
from experiments.easyspec.easyspec_data import RESULTS, continuations, load_pair, log, padded, prompt_ids

OUT = RESULTS / "easyspec_acceptance.json"


def method_for(width: int, depth: int):
    from jaxspec.speculative import chain, tree

    return chain(depth) if width == 1 else tree(depth, width)


def run_config(
    target, draft, toks, lens, cont, *, parallel, calibration, width, policy, depth, max_new, eos, real=False
) -> dict:
    from jaxspec.easyspec import EasySpec
    from jaxspec.speculative import make_spec, run_speculation, summarize
    from jaxspec.speculative.oracle import continuation_buffer, oracle_speculation

    drafter = EasySpec(parallel=parallel, policy=policy, calibration=calibration).bind(draft.cfg)
    method = method_for(width, depth)
    spec = make_spec(
        target.cfg, drafter, method, prompt_len=int(toks.shape[1]), max_new_tokens=max_new, eos_ids=eos, max_len=None
    )
    dp = drafter.prepare(draft.params)
    t0 = time.perf_counter()
    if real:
        state = run_speculation(target.params, dp, toks, lens, jax.random.key(0), spec=spec)
    else:
        state = oracle_speculation(dp, toks, lens, continuation_buffer(cont, max_new, depth), spec=spec)
    jax.block_until_ready(state.num)
    s = summarize(state.stats)
    return {
        "parallel": parallel,
        "calibration": calibration,
        "width": width,
        "depth": depth,
        "policy": policy,
        "partition": drafter.describe()["partition_text"],
        "verification": "real" if real else "oracle",
        "seconds": time.perf_counter() - t0,
        **{
            k: s[k]
            for k in ("rounds", "drafted", "accepted", "acceptance_rate", "mean_accepted_length", "per_position")
        },
        "per_row_accepted_length": [summarize(state.stats, [i])["mean_accepted_length"] for i in range(len(cont))],
        "outputs_equal_continuation": _outputs_match(state, cont, eos, max_new),
    }


def _outputs_match(state, cont, eos, max_new) -> bool:
    """Lossless, checked: every output is the continuation cut after its first stop token and at max_new."""
    from jaxspec import output_ids

    for out, ref in zip(output_ids(state), cont):
        cut = next((i + 1 for i, t in enumerate(ref) if t in eos), len(ref))
        if out != ref[: min(cut, max_new)]:
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="humaneval")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--parallel", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--calibrations", nargs="+", default=["every_round", "every_mismatch", "never"])
    ap.add_argument("--widths", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--policies", nargs="+", default=["attn_only"])
    ap.add_argument("--check-real", type=int, default=1, help="configurations also run through the real engine")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args()
    if args.plot_only:
        print(table())
        return plot()
    from conversion.tokenizer import eos_ids
    from jaxspec.bench import environment

    result = json.loads(OUT.read_text()) if args.resume and OUT.exists() else {"rows": [], "checks": []}
    target, draft = load_pair()
    eos = tuple(eos_ids(target.tokenizer, target.cfg))
    names, ids = prompt_ids(args.source, args.limit, target.tokenizer)
    cont = continuations(target, args.source, ids, args.max_new_tokens + args.depth + 1)
    toks, lens = padded(ids)
    common = dict(depth=args.depth, max_new=args.max_new_tokens, eos=eos)
    done = {
        (r["source"], r["parallel"], r["calibration"], r["width"], r["policy"], r["depth"], r["max_new_tokens"])
        for r in result["rows"]
    }
    grid = [
        (n, c, w, p)
        for p in args.policies
        for w in args.widths
        for c in args.calibrations
        for n in args.parallel
        if not (n == 1 and c != args.calibrations[0])
    ]  # N = 1 has no groups: every calibration is the same
    for i, (n, c, w, p) in enumerate(grid):
        if (args.source, n, c, w, p, args.depth, args.max_new_tokens) in done:
            continue
        row = run_config(target, draft, toks, lens, cont, parallel=n, calibration=c, width=w, policy=p, **common)
        row.update(source=args.source, prompts=len(ids), max_new_tokens=args.max_new_tokens, **provenance())
        result["rows"].append(row)
        log(
            f"[{i + 1}/{len(grid)}] {args.source} N={n} {c} width={w} {p}: acceptance {row['acceptance_rate']:.3f}, "
            f"accepted length {row['mean_accepted_length']:.2f} ({row['seconds']:.0f}s)"
        )
        if i < args.check_real:  # the oracle must reproduce the engine exactly
            real = run_config(
                target, draft, toks, lens, cont, parallel=n, calibration=c, width=w, policy=p, real=True, **common
            )
            same = all(real[k] == row[k] for k in ("rounds", "drafted", "accepted", "per_position"))
            result["checks"].append(
                {
                    "source": args.source,
                    "config": [n, c, w, p],
                    "identical_stats": same,
                    "oracle_s": row["seconds"],
                    "real_s": real["seconds"],
                }
            )
            log(
                f"real-engine check: identical statistics {same} (oracle {row['seconds']:.0f}s, "
                f"real {real['seconds']:.0f}s)"
            )
            if not same:
                raise SystemExit("the oracle's statistics differ from the real engine's")
        result["env"] = environment()
        result["setup"] = {
            "target": "qwen2.5-coder-1.5b-instruct",
            "draft": "qwen2.5-coder-0.5b-instruct",
            "dtype": "float32",
            "greedy": True,
        }
        write_json(result, OUT)
    print(table())
    plot()


def table() -> str:
    """Markdown: per source, policy, width and calibration, α and τ (mean accepted length) over N, and the
    relative change of α against the sequential draft (N = 1)."""
    rows = json.loads(OUT.read_text())["rows"]
    lines = []
    for src in sorted({r["source"] for r in rows}):
        sel = [r for r in rows if r["source"] == src]
        Ns = sorted({r["parallel"] for r in sel})
        lines += [
            f"{src} ({sel[0]['prompts']} prompts, depth {sel[0]['depth']}, {sel[0]['max_new_tokens']} new tokens): "
            "acceptance α, mean accepted length τ, α vs the sequential draft",
            "",
            "| policy | width | calibration | " + " | ".join(f"N = {n}" for n in Ns) + " |",
            "|---|---|---|" + "---|" * len(Ns),
        ]
        for pol, w, c in sorted({(r["policy"], r["width"], r["calibration"]) for r in sel if r["parallel"] > 1}):
            base = next((r for r in sel if r["parallel"] == 1 and r["width"] == w), None)
            cells = []
            for n in Ns:
                r = (
                    base
                    if n == 1
                    else next(
                        (
                            x
                            for x in sel
                            if (x["policy"], x["width"], x["calibration"], x["parallel"]) == (pol, w, c, n)
                        ),
                        None,
                    )
                )
                if r is None:
                    cells.append("")
                    continue
                rel = f" ({r['acceptance_rate'] / base['acceptance_rate'] - 1:+.0%})" if base and n > 1 else ""
                cells.append(f"{r['acceptance_rate']:.3f} / {r['mean_accepted_length']:.2f}{rel}")
            lines.append(f"| {pol} | {w} | {c} | " + " | ".join(cells) + " |")
        lines.append("")
    text = "\n".join(lines) + "\n" + spec_bench_table(rows)
    (RESULTS / "easyspec_acceptance.md").write_text(text)
    return text


def plot() -> None:
    """One panel per HumanEval source (α over N, per width and calibration) and one for the Spec-Bench
    categories (α of the sequential draft and of N = 4 with and without calibration, chain)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = json.loads(OUT.read_text())["rows"]
    sources = sorted({r["source"] for r in rows if not r["source"].startswith("spec-bench:")})
    spec = sorted({r["source"] for r in rows if r["source"].startswith("spec-bench:")})
    panels = len(sources) + bool(spec)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.2), squeeze=False)
    for ax, src in zip(axes[0], sources):
        sel = [r for r in rows if r["source"] == src and r["policy"] == "attn_only"]
        base = {r["width"]: r["acceptance_rate"] for r in sel if r["parallel"] == 1}
        for w, c in sorted({(r["width"], r["calibration"]) for r in sel if r["parallel"] > 1}):
            pts = sorted(
                (r["parallel"], r["acceptance_rate"])
                for r in sel
                if r["width"] == w and (r["calibration"] == c or r["parallel"] == 1)
            )
            ax.plot(
                *zip(*pts),
                marker="o",
                label=f"width {w}, {c}",
                linestyle={"every_round": "-", "every_mismatch": "--", "never": ":"}.get(c, "-."),
            )
        ax.set_xlabel("layer-parallel size N (1 = sequential draft)")
        ax.set_ylabel("acceptance rate α")
        ax.set_title(
            f"{src}: 0.5B drafting for 1.5B, greedy (base α: "
            + ", ".join(f"w{w} {a:.2f}" for w, a in sorted(base.items()))
            + ")",
            fontsize=9,
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if spec:
        ax = axes[0][-1]
        cells = spec_bench_cells(rows)
        x = range(len(cells))
        for i, (key, label) in enumerate(
            (("seq", "sequential draft (N = 1)"), ("every_round", "N = 4, every_round"), ("never", "N = 4, never"))
        ):
            ax.bar([j + (i - 1) * 0.27 for j in x], [c.get(key, 0) for c in cells.values()], 0.27, label=label)
        ax.set_xticks(list(x), [k.split(":", 1)[1] for k in cells], rotation=45, ha="right", fontsize=7)
        ax.set_ylabel("acceptance rate α (chain, D = 5)")
        ax.set_title("Spec-Bench categories (10 prompts each)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "easyspec_acceptance.png", dpi=120)
    log(f"wrote {RESULTS / 'easyspec_acceptance.png'}")


def spec_bench_cells(rows) -> dict:
    """Per Spec-Bench category (chain, ATTN_ONLY): α of the sequential draft and of N = 4 per calibration,
    and the sequential draft's τ."""
    out: dict = {}
    for r in rows:
        if not r["source"].startswith("spec-bench:") or r["width"] != 1 or r["policy"] != "attn_only":
            continue
        cell = out.setdefault(r["source"], {})
        if r["parallel"] == 1:
            cell["seq"], cell["seq_tau"] = r["acceptance_rate"], r["mean_accepted_length"]
        elif r["parallel"] == 4:
            cell[r["calibration"]] = r["acceptance_rate"]
    return dict(sorted(out.items()))


def spec_bench_table(rows) -> str:
    cells = spec_bench_cells(rows)
    if not cells:
        return ""
    lines = [
        "Spec-Bench, chain (D = 5), ATTN_ONLY: α (τ) of the sequential draft, α at N = 4 and its change",
        "",
        "| category | sequential α (τ) | N = 4, every_round | N = 4, never |",
        "|---|---|---|---|",
    ]
    for src, c in cells.items():
        f = lambda k: f"{c[k]:.3f} ({c[k] / c['seq'] - 1:+.0%})" if k in c and "seq" in c else ""  # noqa: E731
        lines.append(
            f"| {src.split(':', 1)[1]} | {c.get('seq', float('nan')):.3f} ({c.get('seq_tau', float('nan')):.2f}) "
            f"| {f('every_round')} | {f('never')} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
