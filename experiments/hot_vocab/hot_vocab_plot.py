"""The hot-vocabulary experiment's PNG (hot_vocab.py writes experiments/results/hot_vocab/hot_vocab.json,
then this):
coverage per V, the draft step per V, each `run*` key's speedup and acceptance, the self-drafters' exit
steps and DEL's round cost, and the self-drafter runs; a panel whose key is missing is left out."""

from __future__ import annotations


def plot(out: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wide = sum(k.startswith("run") for k in out) > 1  # a third row for the runs kept apart
    fig, grid = plt.subplots(3 if wide else 2, 3, figsize=(15, 12.6 if wide else 8.4))
    axes = grid.ravel()
    if "coverage" in out:
        ax = axes[0]
        for name, cov in out["coverage"]["sets"].items():
            xs = sorted(map(int, cov))
            ax.plot(
                [x // 1024 for x in xs],
                [cov[str(x)] for x in xs],
                marker="o",
                lw=2.5 if name == "pooled" else 0.8,
                label=name.replace("spec-bench:", ""),
            )
        for key in sorted(k for k in out if k.startswith("coverage_")):  # other frequency files: their pooled line
            cov = out[key]["sets"]["pooled"]
            xs = sorted(map(int, cov))
            ax.plot(
                [x // 1024 for x in xs],
                [cov[str(x)] for x in xs],
                marker="s",
                ls="--",
                lw=2,
                label=f"pooled, {out[key]['file']} ({out[key]['tokens_counted']} tokens)",
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("V (thousand tokens kept)")
        ax.set_ylabel("share of the 1.5B's output tokens")
        ax.set_title("coverage of held-out outputs", fontsize=9)
        ax.legend(fontsize=6, ncol=2)
    if "step" in out:
        ax, s = axes[1], out["step"]
        xs = sorted(map(int, s["sizes"]))
        ax.plot([x // 1024 for x in xs], [s["sizes"][str(x)]["ms"] for x in xs], marker="o", label="trimmed head")
        ax.axhline(s["full_ms"], color="k", ls="--", lw=0.8, label=f"full head ({s['full_ms']:.1f} ms)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("V (thousand tokens kept)")
        ax.set_ylabel("0.5B draft step, ms")
        ax.set_title(f"draft step (target step {s['target_ms']:.0f} ms)", fontsize=9)
        ax.legend(fontsize=7)
    runs = sorted(k for k in out if k.startswith("run"))  # "run" first, then each `run --key` kept apart
    for ax, key in zip([axes[2], *axes[6:]], runs):
        for spec, table in out[key]["sets"].items():
            names = [n for n in table if n != "vanilla"]
            ax.plot(names, [table[n]["speedup"] for n in names], marker="o", label=f"{spec} speedup")
            ax.plot(names, [table[n]["acceptance_rate"] for n in names], marker="x", ls=":", label=f"{spec} acceptance")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.tick_params(axis="x", labelrotation=15, labelsize=7)
        ax.set_title(f"{key}: chain k={out[key]['k']}, 1.5B target, vs vanilla", fontsize=9)
        ax.legend(fontsize=6)
    if "exit_step" in out:
        ax, s = axes[3], out["exit_step"]
        es = sorted(map(int, s["exits"]))
        ax.plot(es, [s["exits"][str(e)]["full_vs_target"] for e in es], marker="o", color="k", label="full head")
        for n in s["exits"][str(es[0])]["sizes"]:
            ax.plot(
                es,
                [s["exits"][str(e)]["sizes"][n]["vs_target"] for e in es],
                marker="o",
                lw=0.9,
                label=f"{int(n) // 1024}K",
            )
        ax.axhline(1.0, color="k", lw=0.6, ls=":")
        ax.set_xlabel("exit E (layers of the 1.5B)")
        ax.set_ylabel("draft step / target step")
        ax.set_title(f"self-draft step (target step {s['target_ms']:.0f} ms)", fontsize=9)
        ax.legend(fontsize=7)
        ax = axes[4]
        for name, c in s["del_cost"]["by_head"].items():
            ax.plot(c["exits"], c["draft"], marker="o", label=f"DEL draft, {name} head (kept exits)")
        ax.set_xlabel("exit E")
        ax.set_ylabel("DEL's measured draft cost (plain steps)")
        ax.set_title("DEL's round cost: the exits that can pay", fontsize=9)
        ax.legend(fontsize=7)
    if "self_run" in out:
        ax = axes[5]
        for spec, table in out["self_run"]["sets"].items():
            names = [n for n in table if n != "vanilla"]
            ax.plot(names, [table[n]["speedup"] for n in names], marker="o", label=spec)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.set_ylabel("end-to-end speedup vs vanilla")
        ax.set_title(f"self-drafters, full head vs V{out['self_run']['vocab']}", fontsize=9)
        ax.legend(fontsize=7)
    for ax in axes:
        if not ax.has_data():
            ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
