"""Peak host memory of a first load (conversion) of a ≥ 2 GB checkpoint: streamed per device slice and
straight to the requested dtype (`load_model`, conversion/streaming.py) against the whole-model path it
replaced (every tensor read onto the host, in fp32 for torch files, then `device_put`).

A third measurement places the same arrays without reading anything (a jitted program makes them on the
devices): what the arrays themselves occupy on XLA:CPU, allocator overhead included — the floor any load
sits on here.

The checkpoint is synthetic — a Llama-3 layout (GQA 16:4, 128-wide heads, SwiGLU, untied head, rope θ
500 000), 16 layers of width 2048, random bf16 weights, 1.0 B parameters = 2.0 GB, written as HF writes
an indexed sharded checkpoint (`model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`).
Each load runs in a process of its own with 8 simulated devices; its peak resident memory (ru_maxrss)
is compared with its resident memory just before the load. On CPU the device arrays are host memory, so
the bound is: the params in the target dtype (each device's share; all of it here, one process) plus two
of the largest tensor (the one in flight and its cast).

    python -m experiments.conversion.streaming_memory                   # build (once, ~1 min), measure both
    python -m experiments.conversion.streaming_memory --dir /tmp/ckpt --mesh tp=8 --dtype bfloat16"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from experiments.common.paths import cache_dir, results_dir
from experiments.common.results import log, write_json

OUT = results_dir("conversion") / "streaming_memory.json"
LLAMA3_LAYOUT = dict(
    architectures=["LlamaForCausalLM"],
    model_type="llama",
    hidden_size=2048,
    intermediate_size=7168,
    num_hidden_layers=16,
    num_attention_heads=16,
    num_key_value_heads=4,
    head_dim=128,
    vocab_size=32768,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    max_position_embeddings=8192,
    tie_word_embeddings=False,
    attention_bias=False,
    torch_dtype="bfloat16",
    bos_token_id=1,
    eos_token_id=2,
)


def tensor_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    D, F, H, Hkv, K, V = (c[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads",
                                         "num_key_value_heads", "head_dim", "vocab_size"))  # fmt: skip
    shapes = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,), "lm_head.weight": (V, D)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (D,),
            p + "post_attention_layernorm.weight": (D,),
            p + "self_attn.q_proj.weight": (H * K, D),
            p + "self_attn.k_proj.weight": (Hkv * K, D),
            p + "self_attn.v_proj.weight": (Hkv * K, D),
            p + "self_attn.o_proj.weight": (D, H * K),
            p + "mlp.gate_proj.weight": (F, D),
            p + "mlp.up_proj.weight": (F, D),
            p + "mlp.down_proj.weight": (D, F),
        }
    return shapes


def build(path: Path, config: dict = LLAMA3_LAYOUT, shard_bytes: int = 500_000_000, seed: int = 0) -> Path:
    """Write a synthetic indexed safetensors checkpoint of `config` (bf16, random: a 1 M-value random block
    tiled over each tensor, norms near 1); returns `path`. Kept when already complete."""
    import ml_dtypes
    import numpy as np
    from safetensors.numpy import save_file

    path = Path(path)
    index = path / "model.safetensors.index.json"
    if index.exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    block = (rng.standard_normal(1 << 20, dtype=np.float32) * 0.02).astype(ml_dtypes.bfloat16)
    shards, current, size = [], {}, 0
    for name, shape in tensor_shapes(config).items():
        n = math.prod(shape)
        if len(shape) == 1:
            current[name] = (1 + block[:n].astype(np.float32)).astype(ml_dtypes.bfloat16)
        else:
            current[name] = np.resize(np.roll(block, len(shards) * 7919 + n % 104729), n).reshape(shape)
        size += n * 2
        if size >= shard_bytes:
            shards.append(current)
            current, size = {}, 0
    if current:
        shards.append(current)
    weight_map, total = {}, 0
    for i, part in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(part, str(path / fname), metadata={"format": "pt"})
        weight_map |= {k: fname for k in part}
        total += sum(v.nbytes for v in part.values())
    (path / "config.json").write_text(json.dumps(config, indent=1))
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    return path


MODES = {
    "streaming": "streaming (load_model)",
    "whole": "whole (load_hf_dir + device_put)",
    "on_device": "the same arrays made on the devices (nothing read)",
}


def measure(path: str, mesh: str | None, dtype: str, mode: str) -> dict:
    """In this process (started by `run`): resident memory before and peak after placing the params of
    `path` on `mesh` by `mode`: streamed (load_model), whole on the host then device_put (the path load_model
    took before), or made on the devices by a jitted program (what the arrays themselves occupy here)."""
    import resource

    import jax

    from conversion.streaming import largest_tensor_bytes, open_source
    from jaxspec.sharding import parse_mesh, plan_for

    jax.devices()
    m = parse_mesh(mesh)
    cfg, source = open_source(Path(path))
    cfg = cfg.replace(dtype=dtype)
    before, read = _rss_now(), None
    if mode == "whole":
        import jax.numpy as jnp

        from conversion.hf_loader import load_hf_dir

        host = load_hf_dir(Path(path))[1]
        host = jax.tree.map(lambda a: a.astype(jnp.dtype(dtype), copy=False), host)
        params = jax.device_put(host, plan_for(cfg, m).param_shardings(cfg))
        del host
        read = sum(os.path.getsize(f) for f in Path(path).glob("*.safetensors"))  # every file, whole
    elif mode == "on_device":
        from jaxspec.params import abstract_params

        shardings = plan_for(cfg, m).param_shardings(cfg)
        shapes = abstract_params(cfg, shardings)
        params = jax.jit(
            lambda: jax.tree.map(lambda a: jax.numpy.full(a.shape, 0.5, a.dtype), shapes), out_shardings=shardings
        )()
    else:
        from conversion.loader import load_model

        loaded = load_model(Path(path), mesh=m, dtype=dtype, use_checkpoint=False, tokenizer=False)
        params, read = loaded.params, loaded.bytes_read
    jax.block_until_ready(params)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    all_params = sum(x.nbytes for x in jax.tree.leaves(params))
    largest = largest_tensor_bytes(source, dtype)
    return {
        "mode": mode,
        "path": MODES[mode],
        "mesh": mesh,
        "dtype": dtype,
        "rss_before_gb": before / 1e9,
        "peak_rss_gb": peak / 1e9,
        "peak_minus_before_gb": (peak - before) / 1e9,
        "params_gb": all_params / 1e9,
        "largest_tensor_gb": largest / 1e9,
        "bound_gb": (all_params + 2 * largest) / 1e9,
        "bytes_read": read,
    }


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run(path: Path, mesh: str | None, dtype: str, mode: str = "streaming", devices: int = 8) -> dict:
    """`measure` in a fresh process with `devices` simulated devices."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    argv = [sys.executable, "-m", "experiments.conversion.streaming_memory", "measure", str(path),
            "--mesh", mesh or "", "--dtype", dtype, "--mode", mode]  # fmt: skip
    out = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    if out.returncode != 0:
        raise RuntimeError(f"measure failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def plot(doc: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = doc["runs"]
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    short = {"streaming": "streamed", "on_device": "made on\nthe devices", "whole": "whole, then\ndevice_put"}
    names = [f"{short[r['mode']]}\n{r['dtype']}" for r in runs]
    colors = [{"streaming": "tab:blue", "on_device": "tab:gray", "whole": "tab:red"}[r["mode"]] for r in runs]
    ax.bar(range(len(runs)), [r["peak_minus_before_gb"] for r in runs], color=colors, tick_label=names)
    for i, r in enumerate(runs):
        ax.plot([i - 0.4, i + 0.4], [r["bound_gb"]] * 2, "k--", lw=1)
        ax.plot([i - 0.4, i + 0.4], [r["params_gb"]] * 2, "k:", lw=1)
    ax.set_ylabel("peak resident memory added (GB)")
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title(
        f"first load of a 2.0 GB bf16 Llama-3-layout checkpoint, {runs[0]['mesh']} (8 simulated devices)\n"
        "(dashed: params + 2 largest tensors; dotted: params)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", default="all", choices=["all", "measure"])
    p.add_argument("dir", nargs="?", default=None, help="the checkpoint (default: the asset cache's)")
    p.add_argument("--mesh", default="tp=8")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--mode", default="streaming", choices=sorted(MODES), help="what `measure` places")
    p.add_argument("--plot-only", action="store_true")
    args = p.parse_args()
    path = Path(args.dir) if args.dir else cache_dir() / "synthetic" / "llama3-layout-2gb"
    if args.command == "measure":
        print(json.dumps(measure(str(path), args.mesh or None, args.dtype, args.mode)))
        return
    if not args.plot_only:
        log(f"building {path} (once)")
        build(path)
        runs = []
        for mode in ("streaming", "on_device", "whole"):
            for dtype in ("bfloat16", "float32"):
                r = run(path, args.mesh, dtype, mode)
                log(json.dumps(r))
                runs.append(r)
        write_json({"checkpoint": LLAMA3_LAYOUT, "runs": runs}, OUT)
    doc = json.loads(OUT.read_text())
    plot(doc, OUT.with_suffix(".png"))


if __name__ == "__main__":
    main()
