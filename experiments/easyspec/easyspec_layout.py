"""The paper's layout on simulated CPU devices: the target tensor-parallel over the whole mesh (layer × tp),
EasySpec's draft replicated and layer-parallel over `layer` — does the real pair run, lossless, and what
does one device hold?

Each mesh runs `python -m jaxspec bench` (the 1.5B target, the 0.5B draft, EasySpec N = 4 with a 4×4 tree,
calibration every round, `--compare-vanilla`) in a process of its own with that many simulated host
devices, and records the bench JSON's `bytes_per_device` (weights from the arrays' shardings, the
compiled loop's state and temporaries from XLA's memory_analysis), whether the output equals vanilla's,
and the process's peak resident memory (os.wait4). Before the target spanned `layer`, `--mesh layer=4`
held four copies of the fp32 target and was killed by the OOM killer at 24 GB on this box.
Timings here are not the point (simulated devices share 2 cores) and are recorded only as printed.

    python -m experiments.easyspec.easyspec_layout                        # layer=4 and layer=2,tp=2, ~10 min
    python -m experiments.easyspec.easyspec_layout --plot-only"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

from experiments.common.paths import results_dir
from experiments.common.results import log, write_json

RESULTS = results_dir("easyspec")
OUT = RESULTS / "easyspec_layout.json"
TARGET, DRAFT = "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"


def bench_argv(mesh: str, args) -> list[str]:
    return [
        *("bench", "--model", args.model, "--draft", args.draft, "--method", "easyspec"),
        *("--parallel", "4", "--calibration", "every_round", "--depth", "4", "--width", "4"),
        *("--mesh", mesh, "--prompts", args.prompts, "--limit", str(args.limit)),
        *("--max-new-tokens", str(args.max_new_tokens), "--compare-vanilla"),
    ]


def run_mesh(mesh: str, args) -> dict:
    """One bench process on `mesh` (as many simulated devices as the mesh has): its summary's layout
    fields and the process's peak RSS."""
    devices = math.prod(int(p.split("=")[1]) for p in mesh.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "bench.json")
        argv = [sys.executable, "-m", "jaxspec", *bench_argv(mesh, args), "--json", out]
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
        log(f"{mesh}: {' '.join(argv[1:])}")
        proc = subprocess.Popen(argv, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"bench on {mesh} failed (exit {os.waitstatus_to_exitcode(status)})")
        s = json.loads(open(out).read())["summary"]
    return {
        "mesh": s["mesh"],
        "bench_command": "XLA_FLAGS=--xla_force_host_platform_device_count=%d python -m jaxspec %s"
        % (devices, " ".join(bench_argv(mesh, args))),
        "identical_to_vanilla": f"{s['vanilla_identical']}/{s['total']['prompts']}",
        "sharding_notes": s["sharding_notes"],
        "bytes_per_device": s["bytes_per_device"],
        "max_rss_gb": usage.ru_maxrss * 1024 / 1e9,  # ru_maxrss is in KiB on Linux
        "acceptance_rate": s["acceptance_rate"],
        "mean_accepted_length": s.get("mean_accepted_length"),
        "speedup_simulated_devices": s["speedup"],
    }


def plot(doc: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = doc["runs"]
    parts = [("target_weights", "target weights"), ("draft_weights", "draft weights (replicated)"),
             ("state", "caches + loop state"), ("temporaries", "temporaries")]  # fmt: skip
    fig, ax = plt.subplots(figsize=(7, 4))
    names = [",".join(f"{k}={v}" for k, v in r["mesh"].items()) for r in runs]
    bottom = [0.0] * len(runs)
    for key, label in parts:
        vals = [r["bytes_per_device"].get(key, 0) / 1e9 for r in runs]
        ax.bar(names, vals, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, vals)]
    whole = runs[0]["bytes_per_device"]["target_whole"] / 1e9
    ax.axhline(whole, color="k", ls="--", lw=1)
    ax.text(-0.4, whole, f" the whole target ({whole:.1f} GB): a device's share before, replicated along layer",
            va="bottom", fontsize=8)  # fmt: skip
    ax.set_ylabel("GB per device")
    ax.set_title("1.5B target + 0.5B EasySpec draft (fp32): bytes one device holds", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--meshes", default="layer=4;layer=2,tp=2", help="';'-separated --mesh values")
    p.add_argument("--model", default=TARGET)
    p.add_argument("--draft", default=DRAFT)
    p.add_argument("--prompts", default="humaneval")
    p.add_argument("--limit", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--plot-only", action="store_true")
    args = p.parse_args()
    if not args.plot_only:
        doc = {"runs": [run_mesh(m, args) for m in args.meshes.split(";")]}
        write_json(doc, OUT)
        log(f"wrote {OUT}")
    doc = json.loads(OUT.read_text())
    plot(doc, OUT.with_suffix(".png"))
    for r in doc["runs"]:
        b = r["bytes_per_device"]
        log(
            f"{r['mesh']}: identical {r['identical_to_vanilla']}, per device target {b['target_weights'] / 1e9:.2f} GB "
            f"+ draft {b['draft_weights'] / 1e9:.2f} GB + state {b['state'] / 1e6:.1f} MB + temporaries "
            f"{b['temporaries'] / 1e6:.1f} MB; peak RSS {r['max_rss_gb']:.1f} GB"
        )


if __name__ == "__main__":
    main()
