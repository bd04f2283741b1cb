"""A MODEL, not a measurement (issue 13 §4.5): EasySpec on 8 GPUs in the paper's setting — the target
tensor-parallel over TP = 8, the draft on one GPU (sequential) or its groups on the `layer` axis — from
weight bytes, an assumed bandwidth and collective latency, and the acceptance measured here
(experiments/results/easyspec/easyspec_acceptance.json). No GPU was used.

At batch 1 every forward is bound by the weights it reads:
  target step, TP = 8   t_T = W_T / 8 / BW + 2 · L_T · c          (two all-reduces per layer)
  verification          t_V = t_T                                   (1 + D·K tokens, still weight-bound)
  draft step, seq.      t_D = W_D / BW
  draft step, EasySpec  t_E = (W_D − Σ_groups (N_g − 1) · w_attn) / BW + G · c
                        (a group's N attention blocks run at once on N GPUs: one attention read, N MLP
                        reads and one all-gather per group; G groups)
  round                 sequential draft: D · t_D + t_V;  EasySpec: t_D (calibration = step 1) + (D − 1) · t_E + t_V
  speedup vs TP = 8 vanilla = τ · t_T / round,   τ = measured mean accepted length
with W = bf16 weight bytes read per step (LM head included, input embedding gathered), w_attn = one
layer's attention bytes, BW = 1.5 TB/s (an A100's 2.0 TB/s at 75%) and c = 10 µs per small NCCL
collective — assumptions, stated in the JSON.

A second scenario adds kernel launches, the cost that dominates a small model run op by op (eager, as
the official HF-style code): each layer's attention issues a_k kernels and its MLP m_k, ℓ µs each
(assumed 15, 7 and 5 µs), so a draft layer costs bytes/BW + (a_k + m_k)·ℓ and a group of N costs one
attention's launches plus N MLPs' — parallel attention then removes (N − 1)·a_k launches per group.

    python -m experiments.easyspec.easyspec_gpu_model   # reads the acceptance JSON, writes
                                                        # experiments/results/easyspec/easyspec_gpu_model.{json,png}"""

from __future__ import annotations

import json

from experiments.common.paths import results_dir
from experiments.common.results import write_json

RESULTS = results_dir("easyspec")
BW, COLL = 1.5e12, 10e-6
BYTES = 2  # bf16


def shapes(D, F, H, Hkv, K, L, V, tied):
    attn = D * H * K * 2 + D * Hkv * K * 2
    mlp = 3 * D * F
    head = V * D
    return {
        "w_attn": attn * BYTES,
        "w_mlp": mlp * BYTES,
        "layers": L,
        "head": head * BYTES,
        "step_bytes": (L * (attn + mlp) + head) * BYTES,
    }


MODELS = {  # (hidden, mlp, heads, kv heads, head dim, layers, vocab, tied)
    "qwen2.5-coder-1.5b": shapes(1536, 8960, 12, 2, 128, 28, 151936, True),
    "qwen2.5-coder-0.5b": shapes(896, 4864, 14, 2, 64, 24, 151936, True),
    "llama-3-70b": shapes(8192, 28672, 64, 8, 128, 80, 128256, False),
    "llama-3-8b": shapes(4096, 14336, 32, 8, 128, 32, 128256, False),
}


def groups(L: int, N: int) -> list[int]:
    """Group sizes of the default partition: [0], groups of N over 1..L-2, [L-1]."""
    mid = L - 2
    return [1] + [min(N, mid - i) for i in range(0, mid, N)] + [1]


ATTN_KERNELS, MLP_KERNELS, LAUNCH = 15, 7, 5e-6


def draft_step(draft: dict, N: int, launches: bool = False) -> float:
    sizes = groups(draft["layers"], N) if N > 1 else [1] * draft["layers"]
    saved = sum((n - 1) * draft["w_attn"] for n in sizes)
    t = (draft["step_bytes"] - saved) / BW + sum(1 for n in sizes if n > 1) * COLL
    if launches:  # one attention's launches per group, every MLP's
        t += sum(ATTN_KERNELS + n * MLP_KERNELS for n in sizes) * LAUNCH
    return t


def main() -> None:
    target, draft = MODELS["qwen2.5-coder-1.5b"], MODELS["qwen2.5-coder-0.5b"]
    t_T = target["step_bytes"] / 8 / BW + 2 * target["layers"] * COLL
    acc = json.loads((RESULTS / "easyspec_acceptance.json").read_text())["rows"]
    rows = []
    for r in acc:
        if r["policy"] != "attn_only" or r["calibration"] not in ("every_round",):
            continue
        D, N = r["depth"], r["parallel"]
        t_D, t_E = draft["step_bytes"] / BW, draft_step(draft, N)
        rnd = (D * t_D if N == 1 else t_D + (D - 1) * t_E) + t_T
        rows.append(
            {
                "source": r["source"],
                "parallel": N,
                "width": r["width"],
                "depth": D,
                "mean_accepted_length": r["mean_accepted_length"],
                "draft_step_ms": 1e3 * t_E,
                "drafting_ms_per_round": 1e3 * (rnd - t_T),
                "round_ms": 1e3 * rnd,
                "speedup_vs_tp8_vanilla": r["mean_accepted_length"] * t_T / rnd,
            }
        )
    paper = {}  # drafting stage only (draft step, sequential / EasySpec), for the paper's 8B draft and ours
    for name in ("llama-3-8b", "qwen2.5-coder-0.5b"):
        d = MODELS[name]
        for N in (2, 3, 4, 5):
            paper[f"{name} N={N}"] = {
                "bandwidth_only": draft_step(d, 1) / draft_step(d, N),
                "with_eager_launches": draft_step(d, 1, True) / draft_step(d, N, True),
            }
    out = {
        "label": "MODEL: bandwidth and latency arithmetic, no GPU measured",
        "assumptions": {
            "bandwidth_B_per_s": BW,
            "collective_latency_s": COLL,
            "weights": "bf16",
            "target_tp": 8,
            "draft_tp": 1,
            "eager_scenario": {
                "attention_kernels_per_layer": ATTN_KERNELS,
                "mlp_kernels_per_layer": MLP_KERNELS,
                "launch_s": LAUNCH,
            },
        },
        "target_step_ms_tp8": 1e3 * t_T,
        "draft_step_ms_sequential": 1e3 * draft["step_bytes"] / BW,
        "draft_attention_share": draft["w_attn"] / (draft["w_attn"] + draft["w_mlp"]),
        "rows": rows,
        "drafting_speedup": paper,
        "llama3_8b_attention_share": MODELS["llama-3-8b"]["w_attn"]
        / (MODELS["llama-3-8b"]["w_attn"] + MODELS["llama-3-8b"]["w_mlp"]),
    }
    write_json(out, RESULTS / "easyspec_gpu_model.json")
    print(f"target step TP=8 {out['target_step_ms_tp8']:.3f} ms, draft step {out['draft_step_ms_sequential']:.3f} ms")
    for r in rows:
        print(
            f"{r['source']} N={r['parallel']} width={r['width']}: tau {r['mean_accepted_length']:.2f}, draft step "
            f"{r['draft_step_ms']:.3f} ms, round {r['round_ms']:.2f} ms, "
            f"modeled speedup {r['speedup_vs_tp8_vanilla']:.2f}x"
        )
    for k, v in paper.items():
        print(
            f"drafting speedup {k}: bandwidth only {v['bandwidth_only']:.3f}x, with eager launches "
            f"{v['with_eager_launches']:.3f}x"
        )
    plot(out)


def plot(out: dict) -> None:
    """Left: modeled drafting-stage speedup over N for the paper's 8B draft and our 0.5B, bandwidth only and
    with eager launches. Right: modeled end-to-end speedup over TP = 8 vanilla on chat HumanEval, per width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, color in (("llama-3-8b", "tab:green"), ("qwen2.5-coder-0.5b", "tab:orange")):
        Ns = [1] + [int(k.rsplit("=", 1)[1]) for k in out["drafting_speedup"] if k.startswith(name)]
        for key, style in (("bandwidth_only", "--"), ("with_eager_launches", "-")):
            ys = [1.0] + [v[key] for k, v in out["drafting_speedup"].items() if k.startswith(name)]
            a.plot(Ns, ys, style, marker="o", color=color, label=f"{name}, {key.replace('_', ' ')}")
    a.axhline(1.62, color="gray", lw=0.8, ls=":", label="paper: drafting up to 1.62x")
    a.set_xlabel("layer-parallel size N")
    a.set_xticks([1, 2, 3, 4, 5])
    b.set_xticks([1, 2, 3, 4, 5])
    a.set_ylabel("drafting-stage speedup (model)")
    a.legend(fontsize=7)
    a.grid(alpha=0.3)
    for w, color in ((1, "tab:blue"), (2, "tab:purple"), (4, "tab:red")):
        rows = sorted(
            (r for r in out["rows"] if r["source"] == "humaneval" and r["width"] == w), key=lambda r: r["parallel"]
        )
        b.plot(
            [r["parallel"] for r in rows],
            [r["speedup_vs_tp8_vanilla"] for r in rows],
            marker="o",
            color=color,
            label=f"width {w}" if w > 1 else "chain",
        )
    b.axhline(1.0, color="gray", lw=0.8)
    b.set_xlabel("layer-parallel size N (1 = sequential draft)")
    b.set_ylabel("speedup over TP=8 vanilla (model, bandwidth only)")
    b.legend(fontsize=7)
    b.grid(alpha=0.3)
    fig.suptitle(
        "MODEL, no GPU measured: EasySpec on 8 GPUs, 0.5B drafts for 1.5B (bandwidth 1.5 TB/s, "
        "collective 10 µs, launch 5 µs), τ measured on chat HumanEval",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(RESULTS / "easyspec_gpu_model.png", dpi=120)
    print(f"wrote {RESULTS / 'easyspec_gpu_model.png'}")


if __name__ == "__main__":
    main()
