"""The table (and a bar plot) of one `experiments/gpu/gpu_check.sh` run: one row per bench JSON in the folder.

    python -m experiments.gpu.gpu_check_table experiments/results/gpu/gpu_check_<device>

Writes <folder>/table.md and <folder>/tok_per_s.png and prints the table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = [
    "vanilla_target",
    "vanilla_target_einsum",
    "vanilla_draft",
    "parity_fp32",
    "parity_bf16",
    "chain",
    "tree",
    "easyspec",
    "ls",
    "del",
    "del_layers",
]


def fmt(x, spec=".2f"):
    return "–" if x is None else format(x, spec)


def rows(folder: Path) -> list[tuple[str, dict]]:
    found = {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}
    return [(k, found[k]) for k in ORDER if k in found]


def table(runs: list[tuple[str, dict]]) -> str:
    head = (
        "| run | model | method | dtype / precision / attention | tok/s (decode) | of read bound | vs vanilla | "
        "identical (vanilla / HF) | accepted length |\n|---|---|---|---|---|---|---|---|---|"
    )
    out = [head]
    for name, r in runs:
        s = r["summary"]
        n = s["total"]["prompts"]
        ident = f"{s.get('vanilla_identical', '–')}/{n}" if "vanilla_identical" in s else "–"
        ident += f" / {s['hf_identical']}/{n}" if "hf_identical" in s else " / –"
        out.append(
            f"| {name} | {s['model']} | {s['method']} | {s['dtype']} / {s['precision']} / {s.get('attention', '–')} | "
            f"{fmt(s['tok_per_s'])} ({fmt(s['decode_tok_per_s'])}) | {fmt(s.get('fraction_of_bound'))} | "
            f"{fmt(s.get('speedup'))} | {ident} | {fmt(s.get('mean_accepted_length'))} |"
        )
    env = runs[0][1]["env"] if runs else {}
    out.append(
        f"\n{env.get('device')} ({env.get('platform')}, {env.get('num_devices')} device(s)), jax "
        f"{env.get('jax')}, {env.get('date')}"
    )
    return "\n".join(out)


def predicted_beside_measured(path: Path) -> str:
    """The planner's roofline (plan_chain.json) beside the measured vanilla step and chain speedup, and the
    layer-parallel draft step against the sequential one (draft_time_rows.json), when the run wrote them."""
    out = []
    plan, van, chain = (path / f for f in ("plan_chain.json", "vanilla_target.json", "chain.json"))
    if plan.exists() and van.exists() and chain.exists():
        rf = json.loads(plan.read_text())["roofline"]
        v, c = json.loads(van.read_text())["summary"], json.loads(chain.read_text())["summary"]
        out += [
            "\n| quantity | planned (roofline) | measured |\n|---|---|---|",
            f"| vanilla step (ms) | {fmt(rf['vanilla_step_ms'])} | {fmt(1e3 / v['decode_tok_per_s'])} |",
            f"| chain k=5 decode speedup | {fmt(rf['speedup'])} (tau {fmt(rf['tau'])}) "
            f"| {fmt(c.get('decode_speedup'))} |",
        ]
    rows_file = path / "draft_time_rows.json"
    if rows_file.exists():
        rows = json.loads(rows_file.read_text())
        out.append("\n| draft step | context | K | ms | vs sequential |\n|---|---|---|---|---|")
        for r in rows:
            base = next(
                x["seconds"] for x in rows
                if x["variant"] == "sequential" and x["context"] == r["context"]
                and x["width"] == (r["width"] if r["width"] != 6 else 1)
            )  # fmt: skip
            out.append(
                f"| {r['variant']} | {r['context']} | {r['width']} | {r['seconds'] * 1e3:.3f} "
                f"| {r['seconds'] / base:.3f} |"
            )
    return "\n".join(out)


def main(folder: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(folder)
    runs = rows(path)
    if not runs:
        raise SystemExit(f"no bench JSON in {path}")
    text = table(runs) + predicted_beside_measured(path)
    (path / "table.md").write_text(text + "\n")
    print(text)
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.bar([n for n, _ in runs], [r["summary"]["tok_per_s"] for _, r in runs])
    ax.set_ylabel("tok/s end to end")
    ax.set_title(f"gpu_check: {runs[0][1]['env'].get('device')}")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path / "tok_per_s.png", dpi=110)


if __name__ == "__main__":
    main(sys.argv[1])
