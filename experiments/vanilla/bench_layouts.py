"""Weight-layout microbenchmarks behind the decoder's layout (jaxspec/params.py), on Qwen-1.5B shapes
at batch 1: one decode step's matvecs over 28 layers (no attention) in three layouts, the spec's
28 × (1536×8960) matvec reference, and the host read bandwidth measured by the bench command.

    python -m experiments.vanilla.bench_layouts   # ~2 min on the 2-core CPU box
                                                  # → experiments/results/vanilla/layouts_<tag>.json"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common.paths import results_dir
from experiments.common.results import write_json
from jaxspec.bench import environment, measure_read_bandwidth
from jaxspec.timing import best_time

D, F, KV, L = 1536, 8960, 256, 28  # Qwen2.5-1.5B: hidden, MLP width, kv width (2 heads × 128), layers


def layer_stack(layout: str, rng):
    r = lambda *s: jnp.asarray(rng.standard_normal(s, dtype=np.float32) * 0.01)  # noqa: E731
    if layout == "in_out":
        return [dict(q=r(D, D), k=r(D, KV), v=r(D, KV), o=r(D, D), g=r(D, F), u=r(D, F), d=r(F, D)) for _ in range(L)]
    if layout == "out_in":
        return [dict(q=r(D, D), k=r(KV, D), v=r(KV, D), o=r(D, D), g=r(F, D), u=r(F, D), d=r(D, F)) for _ in range(L)]
    # out_in_3d: q/k/v as [heads, head_dim, in] (contracted as "bd,hkd->bhk")
    return [
        dict(q=r(12, 128, D), k=r(2, 128, D), v=r(2, 128, D), o=r(D, D), g=r(F, D), u=r(F, D), d=r(D, F))
        for _ in range(L)
    ]


def mv(h, w):
    """[out, in] matvec written as the decoder does (einsum; `h @ w.T` made XLA:CPU copy w each step)."""
    return jnp.einsum("bd,fd->bf", h, w)


def step(h, layers, layout):
    for p in layers:
        if layout == "in_out":
            a = h @ p["q"] + (h @ p["k"]).sum() + (h @ p["v"]).sum()
            h = h + a @ p["o"]
            h = h + (jax.nn.silu(h @ p["g"]) * (h @ p["u"])) @ p["d"]
            continue
        if layout == "out_in":
            a = mv(h, p["q"]) + mv(h, p["k"]).sum() + mv(h, p["v"]).sum()
        else:
            q = jnp.einsum("bd,hkd->bhk", h, p["q"]).reshape(1, D)
            a = q + jnp.einsum("bd,hkd->bhk", h, p["k"]).sum() + jnp.einsum("bd,hkd->bhk", h, p["v"]).sum()
        h = h + mv(a, p["o"])
        h = h + mv(jax.nn.silu(mv(h, p["g"])) * mv(h, p["u"]), p["d"])
    return h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tag", default="cpu")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    out = {"env": environment(), "shapes": {"D": D, "F": F, "kv": KV, "layers": L}, "layouts": {}}
    h = jnp.ones((1, D), jnp.float32)
    for layout in ("in_out", "out_in", "out_in_3d"):
        layers = layer_stack(layout, rng)
        nbytes = sum(x.nbytes for p in layers for x in p.values())
        s = best_time(jax.jit(lambda h, ls, lay=layout: step(h, ls, lay)), h, layers, repeats=8)
        out["layouts"][layout] = {"ms": s * 1e3, "gb_per_s": nbytes / s / 1e9}
        print(layout, out["layouts"][layout], flush=True)
        del layers
    ws = [jnp.asarray(rng.standard_normal((D, F), dtype=np.float32)) for _ in range(L)]
    s = best_time(jax.jit(lambda h, ws: [h @ w for w in ws]), h, ws, repeats=8)
    out["spec_reference_28_matvecs_1536x8960"] = {
        "ms": s * 1e3,
        "gb_per_s": L * D * F * 4 / s / 1e9,
        "recorded_in_architecture_md_ms": 32.6,
    }
    del ws
    out["machine_read_gb_per_s"] = {k: v / 1e9 for k, v in measure_read_bandwidth().items()}
    print(out["spec_reference_28_matvecs_1536x8960"], out["machine_read_gb_per_s"])
    print("wrote", write_json(out, results_dir("vanilla") / f"layouts_{args.tag}.json"))


if __name__ == "__main__":
    main()
