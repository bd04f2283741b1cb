"""The grouped bar chart the speedup experiments draw: one group of bars per prompt set, one bar per method,
a line at 1.0 (no speedup)."""

from pathlib import Path


def grouped_bars(
    path: Path,
    sets: list[str],
    bars: dict[str, list[float]],
    *,
    ylabel: str,
    title: str,
    figsize: tuple[float, float],
    ticks: dict[str, list[float]] | None = None,
    ticks_label: str = "",
    hatched: dict[str, list[bool]] | None = None,
    hatched_label: str = "",
) -> None:
    """Writes `path` (PNG). bars: label -> one height per set; ticks: label -> heights drawn as black ticks
    over that label's bars (a second measurement of the same cells), labelled once as `ticks_label`;
    hatched: label -> which of its bars to hatch (a cell measured differently), explained once as
    `hatched_label`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    w = 0.8 / len(bars)
    for i, (label, ys) in enumerate(bars.items()):
        xs = [j + i * w for j in range(len(sets))]
        bs = ax.bar(xs, ys, w, label=label)
        for b, h in zip(bs, (hatched or {}).get(label, [])):
            if h:
                b.set_hatch("///")
                b.set_edgecolor("w")
        if ticks and label in ticks:
            ax.scatter(xs, ticks[label], color="k", marker="_", s=80, label=ticks_label if i == 0 else None, zorder=3)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([j + 0.4 - w / 2 for j in range(len(sets))], sets, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    if hatched and any(any(h) for h in hatched.values()):
        from matplotlib.patches import Patch

        handles.append(Patch(facecolor="0.6", edgecolor="w", hatch="///"))
        labels.append(hatched_label)
    ax.legend(handles, labels, fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
