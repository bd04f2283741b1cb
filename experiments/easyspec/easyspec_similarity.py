"""How fuzzy is a group's input? (issue 13 §4.2; paper Table 4 analogue.)

For the Qwen2.5-Coder-0.5B draft over real text (HumanEval prompts + the target's greedy continuation),
for each layer-parallel size N and each group of the default partition ([0], groups of N, [23]): the
cosine similarity between member j's true input h_{g_j} (the exact sequential draft's hidden state) and the
group input h_{g_1} it reads under EasySpec, and the same for the query and key that member's attention
computes from the two (before RoPE, which rotates both alike and so keeps their cosine). Mean over tokens
and members j >= 2, minimum over groups. Paper: hidden-state similarity > 0.8 at N = 4; q/k ≈ 1.

    python -m experiments.easyspec.easyspec_similarity --source humaneval --limit 20

Writes experiments/results/easyspec/easyspec_similarity.json and .png."""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common.results import write_json
from experiments.easyspec.easyspec_data import RESULTS, continuations, load_pair, log, prompt_ids

OUT = RESULTS / "easyspec_similarity"


def cosine(a, b):  # [..., D] → [...]
    return jnp.sum(a * b, -1) / (jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1) + 1e-12)


def layer_inputs(params, cfg, tokens):
    """Exact sequential draft over one sequence i32[1, T]: each layer's input f32[L, T, D]."""
    from jaxspec import forward, init_cache
    from jaxspec.model import embed

    _, _, hid = forward(params, tokens, init_cache(cfg, 1, tokens.shape[1]), cfg, return_hiddens=True)
    return jnp.stack([embed(params, tokens, cfg)[0]] + [h[0] for h in hid[:-1]])


def qk(p, h, cfg):
    """Query and key (no RoPE) of one layer from input h f32[T, D]."""
    from jaxspec.layers import rms_norm

    x = rms_norm(h, p["attn_norm"], cfg.rms_norm_eps)
    q, k = x @ p["wq"].T, x @ p["wk"].T
    if cfg.qkv_bias:
        q, k = q + p["bq"], k + p["bk"]
    return q, k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="humaneval")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--continuation", type=int, default=134, help="continuation tokens appended (cached length)")
    ap.add_argument("--parallel", type=int, nargs="+", default=[2, 3, 4, 5])
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args()
    if args.plot_only:
        return plot(json.loads(OUT.with_suffix(".json").read_text())["rows"])
    from jaxspec.bench import environment
    from jaxspec.easyspec import default_groups

    target, draft = load_pair()
    _, ids = prompt_ids(args.source, args.limit, target.tokenizer)
    cont = continuations(target, args.source, ids, args.continuation)
    cfg, params = draft.cfg, draft.params
    inputs = jax.jit(layer_inputs, static_argnums=1)
    qk_j = jax.jit(qk, static_argnums=2)
    sums: dict[tuple[int, int, int], np.ndarray] = {}  # (N, group index, member j) → [h, q, k] summed over tokens
    tokens = 0
    for seq in (p + c for p, c in zip(ids, cont)):
        h = inputs(params, cfg, jnp.asarray([seq], jnp.int32))  # [L, T, D]
        tokens += len(seq)
        for N in args.parallel:
            for gi, g in enumerate(default_groups(cfg.num_layers, N)):
                for j, l in enumerate(g[1:], start=1):
                    p = params["layers"][l]
                    (qt, kt), (qg, kg) = qk_j(p, h[l], cfg), qk_j(p, h[g[0]], cfg)
                    v = np.asarray([cosine(h[l], h[g[0]]).sum(), cosine(qt, qg).sum(), cosine(kt, kg).sum()])
                    sums[(N, gi, j)] = sums.get((N, gi, j), 0) + v
        log(f"{tokens} tokens")
    rows = []
    for N in args.parallel:
        groups = default_groups(cfg.num_layers, N)
        per = {k: v / tokens for k, v in sums.items() if k[0] == N}
        by_group = [
            {
                "group": list(groups[gi]),
                "member": j,
                "layer": groups[gi][j],
                "hidden": float(v[0]),
                "query": float(v[1]),
                "key": float(v[2]),
            }
            for (_, gi, j), v in sorted(per.items())
        ]
        arr = np.asarray([v for v in per.values()])
        rows.append(
            {
                "parallel": N,
                "mean_hidden": float(arr[:, 0].mean()),
                "min_hidden": float(arr[:, 0].min()),
                "mean_query": float(arr[:, 1].mean()),
                "min_query": float(arr[:, 1].min()),
                "mean_key": float(arr[:, 2].mean()),
                "min_key": float(arr[:, 2].min()),
                "members": by_group,
            }
        )
        log(
            f"N={N}: hidden {rows[-1]['mean_hidden']:.3f} (min {rows[-1]['min_hidden']:.3f}), query "
            f"{rows[-1]['mean_query']:.3f}, key {rows[-1]['mean_key']:.3f}"
        )
    write_json(
        {"source": args.source, "prompts": len(ids), "tokens": tokens, "rows": rows, "env": environment()},
        OUT.with_suffix(".json"),
    )
    plot(rows)


def plot(rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:  # hidden states for every N; query and key for N = 4
        ax.plot(
            [x["layer"] for x in r["members"]],
            [x["hidden"] for x in r["members"]],
            "o",
            ms=4,
            label=f"hidden state, N={r['parallel']}",
        )
    four = next(r for r in rows if r["parallel"] == 4)
    for what, m in (("query", "s"), ("key", "^")):
        ax.plot(
            [x["layer"] for x in four["members"]],
            [x[what] for x in four["members"]],
            m,
            ms=5,
            mfc="none",
            color="black" if what == "query" else "gray",
            label=f"{what}, N=4",
        )
    ax.axhline(0.8, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("draft layer (member j >= 2 of its group)")
    ax.set_ylabel("cosine(true input, group input)")
    ax.set_title("Qwen2.5-Coder-0.5B: how far a group member's input is from the group's", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(OUT.with_suffix(".png"), dpi=120)
    log(f"wrote {OUT.with_suffix('.png')}")


if __name__ == "__main__":
    main()
