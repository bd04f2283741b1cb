"""`python -m jaxspec plan`: compile-only planning of a model pair on a TPU topology or a simulated CPU mesh
(jaxspec/plan.py does the work; this file is its flags, its report and its JSON).

    python -m jaxspec plan --preset llama3-70b+8b --topology v5p:2x2x2 --mesh layer=4,tp=2
    python -m jaxspec plan --preset layerskip-llama3-8b --cpu-devices 8 --mesh tp=8 --hbm-gib 80
    python -m jaxspec plan --config target/config.json --draft-config draft/config.json --method chain -k 5 \\
        --cpu-devices 4 --mesh tp=4 --widths 1,16,64,256 --max-batch --json plan.json"""

from __future__ import annotations

import json
import os
import sys
import time


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="compile-only plan: bytes per device, collectives, roofline (no weights read)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--preset", help="a paper's pair: llama3-70b+8b, qwen2-72b+7b, layerskip-llama2-7b, ...")
    what.add_argument("--config", help="the target's HF config.json")
    what.add_argument("--model", help="the target's config from a model's files (registry name, .gguf, HF dir)")
    p.add_argument("--draft-config", default=None, help="the draft's HF config.json (with --config)")
    p.add_argument("--draft", default=None, help="the draft's config from its files (with --model)")
    p.add_argument("--method", default=None, help="registry method (default: the preset's, else chain)")
    p.add_argument("-k", type=int, default=None)
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--exit-layer", type=int, default=None, help="ls / fs / dv: the exit")
    on = p.add_mutually_exclusive_group(required=True)
    on.add_argument("--topology", help="a TPU topology, e.g. v5e:2x2, v5p:2x2x2 (needs the tpu-plan extra)")
    on.add_argument("--cpu-devices", type=int, help="this host's simulated CPU devices, standing in for GPUs")
    on.add_argument("--local-devices", type=int, help="this host's own accelerators (e.g. a GPU host's GPUs)")
    p.add_argument("--mesh", default=None, help="axes over those devices, e.g. layer=4,tp=2 (default: all on tp)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    p.add_argument("--context", type=int, default=4096, help="cache slots (prompt + new tokens + a round)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--hbm-gib", type=float, default=None, help="memory per device (default: the chip's; CPU: H100's)")
    p.add_argument("--hbm-gb-per-s", type=float, default=None, help="memory bandwidth per device (roofline)")
    p.add_argument("--link-gb-per-s", type=float, default=None, help="interconnect bandwidth (roofline)")
    p.add_argument("--latency-us", type=float, default=10.0, help="an assumed latency per collective (roofline)")
    p.add_argument("--tau", type=float, default=3.0, help="mean tokens per round the roofline assumes")
    p.add_argument("--widths", default=None, help="verification cost against width, e.g. 1,4,16,64,256")
    p.add_argument("--max-batch", action="store_true", help="bisect the largest batch that fits (compiles ~log2 times)")
    p.add_argument("--max-context", action="store_true", help="bisect the largest context that fits at --batch")
    p.add_argument("--json", default=None, help="write the plan here")


def _mesh_axes(spec: str | None, n: int) -> dict[str, int]:
    from jaxspec.sharding import parse_mesh_axes

    return parse_mesh_axes(spec) if spec else {"tp": n}


def _devices(args):
    """(devices, accelerator, label): a TPU topology's, or this host's CPU devices — re-executing this
    command with enough simulated devices when run as `python -m jaxspec` with too few."""
    import dataclasses

    import jax

    from jaxspec.plan_presets import ACCELERATORS, tpu_devices

    if args.topology:
        return tpu_devices(args.topology), ACCELERATORS[args.topology.split(":")[0]], f"TPU {args.topology}"
    if args.local_devices:
        have = jax.devices()
        if args.local_devices > len(have):
            raise ValueError(f"--local-devices {args.local_devices}: this host has {len(have)} {have[0].platform}")
        kind = have[0].device_kind
        figures = dataclasses.replace(ACCELERATORS["h100"], name=f"{kind} (H100's figures where not given)")
        return have[: args.local_devices], figures, f"{args.local_devices} local {kind} (compiled here)"
    have = len(jax.devices("cpu"))
    if args.cpu_devices > have:
        flag = f"--xla_force_host_platform_device_count={args.cpu_devices}"
        if sys.argv[1:2] == ["plan"] and not os.environ.get("JAXSPEC_PLAN_REEXEC"):
            env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {flag}", JAXSPEC_PLAN_REEXEC="1")
            os.execve(sys.executable, [sys.executable, "-m", "jaxspec", *sys.argv[1:]], env)
        raise ValueError(f"--cpu-devices {args.cpu_devices}: this process has {have}; set XLA_FLAGS={flag}")
    label = f"{args.cpu_devices} simulated CPU devices (bytes from the CPU compile, standing in for GPUs)"
    return jax.devices("cpu")[: args.cpu_devices], ACCELERATORS["h100"], label


def _configs(args):
    from jaxspec.config import config_from_hf
    from jaxspec.plan_presets import model_config, preset

    if args.preset:
        p = preset(args.preset)
        return model_config(p.target), (model_config(p.draft) if p.draft else None), args.method or p.method
    if args.model:  # the config from the files' metadata / config.json; no weight is read
        from conversion.loader import model_config as of

        return of(args.model), (of(args.draft) if args.draft else None), args.method or "chain"
    if args.draft_config and not os.path.exists(args.draft_config):
        raise FileNotFoundError(f"--draft-config {args.draft_config}: no such file")
    with open(args.config) as f:
        target = config_from_hf(json.load(f))
    draft = None
    if args.draft_config:
        with open(args.draft_config) as f:
            draft = config_from_hf(json.load(f))
    return target, draft, args.method or "chain"


def run_plan(args) -> dict:
    import dataclasses

    from jaxspec import plan as P

    target, draft, method = _configs(args)
    target, draft = target.replace(dtype=args.dtype), (draft.replace(dtype=args.dtype) if draft else None)
    devices, acc, label = _devices(args)
    acc = dataclasses.replace(
        acc,
        hbm_gib=args.hbm_gib or acc.hbm_gib,
        hbm_gb_per_s=args.hbm_gb_per_s or acc.hbm_gb_per_s,
        link_gb_per_s=args.link_gb_per_s or acc.link_gb_per_s,
    )
    mesh = P.mesh_on(devices, _mesh_axes(args.mesh, len(devices)))
    shape = {k: v for k, v in (("k", args.k), ("depth", args.depth), ("width", args.width)) if v is not None}
    options = {"exit_layer": args.exit_layer} if args.exit_layer is not None else {}
    t0 = time.perf_counter()
    spec = P.plan_speculative(target, draft, method, mesh, batch=args.batch, context=args.context, shape=shape,
                              options=options)  # fmt: skip
    vanilla = P.plan_vanilla(target, mesh, batch=args.batch, context=args.context)
    out = {
        "devices": label,
        "mesh": dict(mesh.shape),
        "dtype": args.dtype,
        "context": args.context,
        "batch": args.batch,
        "hbm_gib": acc.hbm_gib,
        "speculative": spec,
        "vanilla": vanilla,
        "peak_bytes": P.peak_bytes(spec),
        "fits": P.peak_bytes(spec) <= acc.hbm_gib * 2**30,
        "roofline": P.roofline(spec, vanilla, acc, tau=args.tau, latency_us=args.latency_us),
    }
    if args.widths:
        widths = [int(w) for w in args.widths.split(",")]
        out["verification_widths"] = P.verification_widths(target, mesh, widths, context=args.context)
    if args.max_batch:
        out["max_batch"] = P.max_batch(target, draft, method, mesh, context=args.context, hbm_bytes=acc.hbm_gib * 2**30,
                                       shape=shape, options=options)  # fmt: skip
    if args.max_context:
        out["max_context"] = P.max_context(target, draft, method, mesh, batch=args.batch, hbm_bytes=acc.hbm_gib * 2**30,
                                           shape=shape, options=options)  # fmt: skip
    out["compile_s"] = time.perf_counter() - t0
    return out


def report(r: dict) -> str:
    gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
    s = r["speculative"]
    lines = [
        f"plan: {s['method']} {s['shape']['name']} depth {s['shape']['depth']} width {s['shape']['width']} on "
        f"{r['devices']}, mesh {r['mesh']}, {r['dtype']}, context {r['context']}, batch {r['batch']}",
        f"per device: target weights {gib(s['target_weights'])}, draft weights {gib(s['draft_weights'])}, "
        f"target cache {gib(s['target_cache'])}, draft cache {gib(s['draft_cache'])}, "
        f"temporaries {gib(s['temporaries'])}",
        f"peak {gib(r['peak_bytes'])} of {r['hbm_gib']:g} GiB: {'fits' if r['fits'] else 'DOES NOT FIT'}",
    ]
    for note in s["target_notes"]:
        lines.append(f"  target sharding: {note}")
    lines.append(f"one round's collectives ({len(s['collectives'])} call sites):")
    seen: dict = {}
    for c in s["collectives"]:
        key = (c["kind"], c["shape"], c["axes"], c["depth"])
        seen[key] = seen.get(key, 0) + 1
    for (kind, shape, axes, depth), n in sorted(seen.items(), key=lambda kv: -kv[1]):
        where = "per draft step" if depth > 1 else "per round"
        lines.append(f"  {n:4d} x {kind:<15} {shape:<22} over {axes:<10} {where}")
    rf = r["roofline"]
    if rf.get("speedup") is not None:
        lines.append(
            f"roofline: vanilla step {rf['vanilla_step_ms']:.3f} ms, round {rf['round_ms']:.3f} ms, "
            f"speedup {rf['speedup']:.2f}x at tau {rf['tau']:g} ({rf['assumed']})"
        )
    else:
        lines.append(f"roofline: vanilla step {rf['vanilla_step_ms']:.3f} ms; {rf['why_not']}")
    for w in r.get("verification_widths", []):
        t = f", TPU estimate {w['optimal_seconds'] * 1e3:.3f} ms" if w.get("optimal_seconds") else ""
        lines.append(
            f"  verify width {w['width']:4d}: {w['flops'] / 1e9:.2f} GFLOP, {w['bytes_accessed'] / 2**30:.2f} GiB{t}"
        )
    if "max_batch" in r:
        lines.append(f"largest batch that fits: {r['max_batch']}")
    if "max_context" in r:
        lines.append(f"largest context that fits at batch {r['batch']}: {r['max_context']} slots")
    lines.append(f"(compiled in {r['compile_s']:.1f} s)")
    return "\n".join(lines)


def cmd_plan(args) -> int:
    r = run_plan(args)
    print(report(r))
    if args.json:
        from jaxspec.bench import write_json

        print(f"wrote {write_json({**r, 'command': 'python -m jaxspec ' + ' '.join(sys.argv[1:])}, args.json)}")
    return 0
