"""Drafting-stage time of EasySpec on this CPU (issue 13 §4.4a, and the calibration scan-vs-unrolled
choice of §2): one draft forward of the Qwen2.5-Coder-0.5B, batch 1, fp32, K new tokens after `context`
cached ones, best of `--repeats`:
  sequential    the exact draft (model.forward), what DraftModel runs every step;
  attn_only     EasySpec's layer-parallel forward, default partition [0] [1-4] .. [21-22] [23];
  direct_mlp    the same with whole layers in parallel;
  calib_*       the exact calibration pass over D + 1 = 6 tokens, unrolled layer loop vs lax.scan.
One device: the vmap path. `--devices 2`: a 2-device host mesh (`layer=2`, groups split to pairs), the
shard_map path, against the sequential draft in the same process. The parent run starts one process per
device count (XLA's host device count is fixed at import) and writes
experiments/results/easyspec/easyspec_draft_time.json (+ .png).

The prediction (from bytes, the box being memory-bound) is printed beside each measurement: a Qwen-0.5B
layer reads 1.83 M attention and 13.07 M MLP weights (12% attention), so running a group's attention
blocks concurrently can save at most (1 − 1/N) of 12% of the grouped layers' bytes — and only where the
concurrent blocks get bandwidth of their own (separate GPUs). On one CPU socket the sequential draft
already spreads each product over both cores, so the prediction there is no gain.

    python -m experiments.easyspec.easyspec_draft_time                 # both device counts, ~10 min"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from experiments.common.paths import results_dir
from experiments.common.results import write_json

RESULTS = results_dir("easyspec")
DRAFT = "qwen2.5-coder-0.5b-instruct"


def measure(devices: int, contexts, widths, repeats: int) -> list[dict]:
    import functools

    import jax
    import jax.numpy as jnp

    from conversion.loader import load_model
    from jaxspec import forward, init_cache, make_mesh
    from jaxspec.easyspec import EasySpec
    from jaxspec.easyspec.calibration import exact_pass
    from jaxspec.easyspec.layer_parallel import fuzzy_forward
    from jaxspec.masks import causal_mask
    from jaxspec.timing import best_time

    mesh = make_mesh({"layer": devices}) if devices > 1 else None
    d = load_model(DRAFT, mesh=mesh, replicated=True)
    cfg = d.cfg
    rows = []

    @functools.partial(jax.jit, static_argnames=("cfg",))
    def seq(params, tokens, cache, *, cfg):
        return forward(params, tokens, cache, cfg)[0]

    for policy in ("attn_only", "direct_mlp"):
        drafter = EasySpec(parallel=4, policy=policy).bind(cfg, mesh)
        prepared = drafter.prepare(d.params)

        @jax.jit
        def fuzzy(p, tokens, cache, drafter=drafter):
            T = tokens.shape[1]
            pos = cache.lengths[:, None] + jnp.arange(T, dtype=jnp.int32)
            return fuzzy_forward(
                p["model"],
                p["groups"],
                drafter.groups,
                tokens,
                cache,
                pos,
                causal_mask(cache.lengths, T, cache.max_len),
                cfg,
                drafter.policy,
                drafter.layer_mesh,
            )[0]

        for C in contexts:
            cache = init_cache(cfg, 1, C + 64).replace(lengths=jnp.asarray([C], jnp.int32))
            if mesh is not None:
                cache = jax.device_put(cache, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
            for K in widths:
                toks = jnp.ones((1, K), jnp.int32)
                if policy == "attn_only":
                    rows.append(
                        {
                            "devices": devices,
                            "context": C,
                            "width": K,
                            "variant": "sequential",
                            "seconds": best_time(
                                functools.partial(seq, cfg=cfg), d.params, toks, cache, repeats=repeats
                            ),
                        }
                    )
                rows.append(
                    {
                        "devices": devices,
                        "context": C,
                        "width": K,
                        "variant": policy,
                        "partition": drafter.describe()["partition_text"],
                        "path": drafter.describe()["path"],
                        "seconds": best_time(fuzzy, prepared, toks, cache, repeats=repeats),
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if devices == 1:  # the calibration pass: unrolled vs scan, D + 1 = 6 tokens
        drafter = EasySpec(parallel=4, scan_calibration=True).bind(cfg)
        prepared = drafter.prepare(d.params)
        f = jax.jit(exact_pass, static_argnames=("cfg", "scan"))
        for C in contexts:
            cache = init_cache(cfg, 1, C + 64).replace(lengths=jnp.asarray([C], jnp.int32))
            toks = jnp.ones((1, 6), jnp.int32)
            pos = C + jnp.arange(6, dtype=jnp.int32)[None]
            at = jnp.asarray([[5]], jnp.int32)
            for scan in (False, True):
                s = best_time(
                    functools.partial(f, cfg=cfg, scan=scan),
                    d.params,
                    prepared["layers"],
                    toks,
                    cache,
                    pos,
                    at,
                    repeats=repeats,
                )
                rows.append(
                    {
                        "devices": 1,
                        "context": C,
                        "width": 6,
                        "variant": "calib_scan" if scan else "calib_unrolled",
                        "seconds": s,
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=None, help="(child) measure with this many host devices")
    ap.add_argument("--contexts", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--widths", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    common = [
        "--contexts",
        *map(str, args.contexts),
        "--widths",
        *map(str, args.widths),
        "--repeats",
        str(args.repeats),
    ]
    if args.devices is not None:
        print(json.dumps(measure(args.devices, args.contexts, args.widths, args.repeats)))
        return
    rows = []
    for devices in (1, 2):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
        out = subprocess.run(
            [sys.executable, "-m", "experiments.easyspec.easyspec_draft_time", "--devices", str(devices), *common],
            env=env,
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
        rows += json.loads(out.strip().splitlines()[-1])
    for r in rows:
        base = next(
            x["seconds"]
            for x in rows
            if x["variant"] == "sequential"
            and x["devices"] == r["devices"]
            and x["context"] == r["context"]
            and x["width"] == (r["width"] if r["width"] != 6 else 1)
        )
        r["vs_sequential"] = r["seconds"] / base
    from jaxspec.bench import environment

    write_json(
        {
            "draft": DRAFT,
            "dtype": "float32",
            "batch": 1,
            "rows": rows,
            "env": environment(),
            "prediction": prediction(),
        },
        RESULTS / "easyspec_draft_time.json",
    )
    plot(rows)
    for r in rows:
        print(
            f"{r['devices']} dev  C={r['context']:5d}  K={r['width']}  {r['variant']:15s} {r['seconds'] * 1e3:8.2f} ms"
            f"  {r['vs_sequential']:.3f}x of sequential"
        )


def prediction() -> dict:
    """Bytes per layer of the Qwen-0.5B draft and the best case for attention-only parallelism."""
    D, F, H, Hkv, K, L = 896, 4864, 14, 2, 64, 24
    attn = D * H * K * 2 + D * Hkv * K * 2 + H * K + 2 * Hkv * K + D
    mlp = 3 * D * F + D
    grouped = 22  # layers 1..22 sit in groups under the default partition
    out = {"attention_params_per_layer": attn, "mlp_params_per_layer": mlp, "attention_share": attn / (attn + mlp)}
    for n in (2, 4):
        saved = (1 - 1 / n) * attn * grouped / ((attn + mlp) * L)
        out[f"attn_only_best_ratio_N{n}_separate_bandwidth"] = 1 - saved
        out[f"direct_mlp_best_ratio_N{n}_separate_bandwidth"] = 1 - (1 - 1 / n) * grouped / L
    out["shared_bandwidth_ratio"] = 1.0
    return out


def plot(rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4))
    labels = sorted({(r["devices"], r["variant"], r["width"]) for r in rows if r["variant"] != "sequential"})
    for dev, var, K in labels:
        pts = sorted(
            (r["context"], r["vs_sequential"])
            for r in rows
            if (r["devices"], r["variant"], r["width"]) == (dev, var, K)
        )
        ax.plot(*zip(*pts), marker="o", label=f"{var}, K={K}, {dev} device{'s' if dev > 1 else ''}")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context (cached tokens)")
    ax.set_ylabel("time / sequential draft forward")
    ax.set_title("Qwen2.5-Coder-0.5B draft forward on the 2-core CPU (lower is faster)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "easyspec_draft_time.png", dpi=120)


if __name__ == "__main__":
    main()
