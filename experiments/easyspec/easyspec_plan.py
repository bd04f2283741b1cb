"""The papers' pairs at the papers' scale, planned (compile-only, no weights): does EasySpec's layout — the
target tensor-parallel over all the chips (layer × tp), the draft whole on every chip, its groups over
`layer` — fit, and what does a round move, on TPU v5p slices of 8, 16, 32 and 64 chips?

Each row is one `python -m jaxspec plan` run (a process of its own; libtpu compiles for the topology on
this CPU host: `pip install -e '.[tpu-plan]'`), bf16, a 4,096-slot context, batch 1: the plain chain k = 4
with the draft tensor-parallel like the target, and EasySpec N = 4 with a 4 × 2 tree (the paper's setting).
Bytes per chip are exact for v5p (XLA's compiled memory analysis); the roofline is bandwidth-only with an
assumed 10 µs per collective and τ = 3 (see docs/easyspec.md before reading its speedups).

    python -m experiments.easyspec.easyspec_plan                       # ~5 min a row on 2 cores
    python -m experiments.easyspec.easyspec_plan --rows llama3-70b+8b:easyspec:8 --plot-only"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from experiments.common.paths import results_dir
from experiments.common.results import log, write_json

OUT = results_dir("easyspec") / "easyspec_plan.json"
TOPOLOGY = {8: "v5p:2x2x2", 16: "v5p:2x2x4", 32: "v5p:2x4x4", 64: "v5p:4x4x4"}
DEFAULT_ROWS = [f"{p}:{m}:{n}" for n in (8, 16, 32, 64) for p in ("llama3-70b+8b", "qwen2-72b+7b")
                for m in ("chain", "easyspec")]  # fmt: skip


def plan_argv(row: str) -> list[str]:
    preset, method, chips = row.split(":")
    chips = int(chips)
    shape = ["-k", "4"] if method == "chain" else ["--depth", "4", "--width", "2"]
    mesh = f"tp={chips}" if method == "chain" else f"layer=4,tp={chips // 4}"
    return ["plan", "--preset", preset, "--method", method, *shape, "--topology", TOPOLOGY[chips], "--mesh", mesh]


def run_row(row: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "plan.json")
        argv = [sys.executable, "-m", "jaxspec", *plan_argv(row), "--json", out]
        log(" ".join(argv[1:]))
        proc = subprocess.run(argv, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{row} failed:\n{proc.stderr[-3000:]}")
        doc = json.loads(open(out).read())
    s = doc["speculative"]
    return {
        "row": row,
        "command": "python -m jaxspec " + " ".join(plan_argv(row)),
        "mesh": doc["mesh"],
        "devices": doc["devices"],
        "per_chip_gib": {
            k: s[k] / 2**30 for k in ("target_weights", "draft_weights", "target_cache", "draft_cache", "temporaries")
        },
        "peak_gib": doc["peak_bytes"] / 2**30,
        "fits_95_gib": doc["fits"],
        "collectives_per_round": _count(s["collectives"]),
        "roofline": doc["roofline"],
        "target_notes": s["target_notes"],
        "compile_s": doc["compile_s"],
    }


def _count(colls: list[dict]) -> dict:
    out: dict = {}
    for c in colls:
        key = f"{c['kind']} over {c['axes']} ({'per draft step' if c['depth'] > 1 else 'per round'})"
        out[key] = out.get(key, 0) + 1
    return out


def plot(doc: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["rows"]
    parts = [(k, k.replace("_", " ")) for k in ("target_weights", "draft_weights", "target_cache", "draft_cache")]
    parts.append(("temporaries", "temporaries"))
    fig, ax = plt.subplots(figsize=(max(7, 0.7 * len(rows)), 4.2))
    names = [r["row"].replace("+", "+\n").replace(":", "\n") for r in rows]
    bottom = [0.0] * len(rows)
    for key, label in parts:
        vals = [r["per_chip_gib"][key] for r in rows]
        ax.bar(range(len(rows)), vals, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.axhline(95, color="k", ls="--", lw=1)
    ax.set_xticks(range(len(rows)), names, fontsize=6)
    ax.set_ylabel("GiB per chip (v5p, compiled)")
    ax.set_title("planned bytes per chip, bf16, 4,096-slot context (dashed: v5p's 95 GiB)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(doc: dict) -> str:
    """The docs' table, from the JSON."""
    head = (
        "| pair | method | chips (v5p) | mesh | target / draft weights | caches | temporaries | peak per chip "
        "| collectives a round | roofline step → round | speedup at τ = 3 |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    out = [head]
    for r in doc["rows"]:
        preset, method, chips = r["row"].split(":")
        b, rf = r["per_chip_gib"], r["roofline"]
        mesh = ",".join(f"{k}={v}" for k, v in r["mesh"].items())
        out.append(
            f"| {preset} | {method} | {chips} | {mesh} | {b['target_weights']:.1f} / {b['draft_weights']:.1f} GiB "
            f"| {b['target_cache'] + b['draft_cache']:.2f} GiB | {b['temporaries']:.1f} GiB "
            f"| **{r['peak_gib']:.1f} GiB** | {rf['round_collectives']} "
            f"| {rf['vanilla_step_ms']:.2f} → {rf['round_ms']:.2f} ms | {rf['speedup']:.2f}× |"
        )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default=",".join(DEFAULT_ROWS), help="PRESET:METHOD:CHIPS,...")
    p.add_argument("--plot-only", action="store_true")
    args = p.parse_args()
    if not args.plot_only:
        done = {r["row"]: r for r in json.loads(OUT.read_text())["rows"]} if OUT.exists() else {}
        for row in args.rows.split(","):
            done[row] = run_row(row)
            write_json({"rows": [done[k] for k in sorted(done, key=_order)]}, OUT)  # after each row: resumable
            log(json.dumps(done[row]))
    doc = json.loads(OUT.read_text())
    plot(doc, OUT.with_suffix(".png"))
    OUT.with_suffix(".md").write_text(markdown(doc) + "\n")
    print(markdown(doc))


def _order(row: str):
    preset, method, chips = row.split(":")
    return int(chips), preset, method


if __name__ == "__main__":
    main()
