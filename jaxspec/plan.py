"""Compile-only planning: will this pair, method and mesh fit, what does a round move, and what would it run
at — before anyone rents the machines.

The whole speculative loop (`engine.run_speculation`, the program `speculate` runs) and vanilla decoding
(`decode.generate`) are lowered and compiled ahead of time with every weight a `jax.ShapeDtypeStruct` in the
plan's sharding (no weight is read or allocated), for a TPU topology's devices (through libtpu, on any host:
exact per-chip bytes for that chip) or for this host's simulated CPU devices standing in for GPUs (bytes from
the CPU compile, labelled so). From the compiled programs:
  * bytes per device: each model's weights (from their shardings), the KV caches (from the plan's cache
    layout), and the loop's temporaries and outputs (XLA's `memory_analysis`) — fits or not in a given HBM;
  * the collectives of one round: every collective call site in the loop's body, its kind, bytes, replica
    group and the mesh axes that group spans (a call site inside the draft's inner loop runs once per draft
    step);
  * a roofline, bandwidth only: a round reads each model's per-device weights once per forward it runs
    (the draft `depth` times, the target once) plus its cache, and pays each collective's latency (an
    assumed constant) and bytes over the link; vanilla reads the target once per token. Speedup = τ ·
    t_step / t_round for a given mean accepted length τ.
`widths` adds the verification pass's cost against its width (a target forward of 1 … 256 tokens, from
`cost_analysis`); `max_batch` bisects the largest batch whose compiled bytes fit."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh

from jaxspec.cache import init_cache
from jaxspec.config import ModelConfig
from jaxspec.decode import DecodeSpec, generate
from jaxspec.easyspec.layer_parallel import ATTN_KEYS
from jaxspec.hlo import COLLECTIVE_RE, replica_group_size
from jaxspec.params import abstract_params
from jaxspec.plan_presets import Accelerator
from jaxspec.sharding import (
    CACHE_AXES,
    ShardingPlan,
    bytes_per_device,
    kv_repeats,
    model_axes,
    plan_for,
    replicated_plan,
)

HLO_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
             "s64": 8, "u64": 8, "f64": 8}  # fmt: skip


def mesh_on(devices, axes: dict[str, int]) -> Mesh:
    """A mesh of `axes` over these devices (a TPU topology's or this host's), Auto axes as make_mesh's."""
    n = math.prod(axes.values())
    if n != len(devices):
        raise ValueError(f"mesh {axes} has {n} devices, the target devices number {len(devices)}")
    return Mesh(np.array(devices).reshape(tuple(axes.values())), tuple(axes), axis_types=(AxisType.Auto,) * len(axes))


def _expanded(cfg: ModelConfig, mesh: Mesh) -> tuple[ModelConfig, ShardingPlan]:
    """The config and plan `load_model` would give: kv heads repeated where the attention's axes outnumber them."""
    cfg = cfg.replace(num_kv_heads=cfg.num_kv_heads * kv_repeats(cfg, mesh))
    return cfg, plan_for(cfg, mesh)


def _abstract(tree, shardings):
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings)


def cache_bytes(cfg: ModelConfig, plan: ShardingPlan, batch: int, slots: int) -> int:
    """Bytes one device holds of a `slots`-slot KV cache of `batch` rows laid out by `plan`."""
    shape = jax.eval_shape(lambda: init_cache(cfg, batch, slots))
    kv = plan.sharding(CACHE_AXES)
    return sum(math.prod(kv.shard_shape(a.shape)) * a.dtype.itemsize for a in (*shape.k, *shape.v))


def group_axes(mesh: Mesh, size: int) -> str:
    """The mesh axes a replica group of `size` devices spans (model axes first), e.g. 'layer×tp'."""
    names = list(model_axes(mesh)) + [a for a in mesh.axis_names if a not in model_axes(mesh)]
    for r in range(len(names), 0, -1):
        for i in range(len(names) - r + 1):
            part = names[i : i + r]
            if math.prod(mesh.shape[a] for a in part) == size:
                return "×".join(part)
    return f"{size} devices"


def collectives(hlo: str, mesh: Mesh, body: str = "while/body") -> list[dict]:
    """Every collective call site of a compiled program inside its loop (op names containing `body`): kind,
    result shape, bytes, devices per replica group and the axes they span, and the loop depth (2: inside
    an inner loop of the round, e.g. the draft's growth loop)."""
    out = []
    for shape, kind, rest in COLLECTIVE_RE.findall(hlo):
        name = re.search(r'op_name="([^"]*)"', rest)
        depth = name.group(1).count(body) if name else 0
        if depth == 0:
            continue
        shape = shape.split("{")[0]
        dtype = shape.split("[")[0]
        dims = [int(d) for d in re.findall(r"\d+", shape.split("[")[1])] if "[" in shape else []
        nbytes = math.prod(dims) * HLO_BYTES.get(dtype, 4)
        size = replica_group_size(rest)
        out.append(dict(kind=kind, shape=shape, bytes=nbytes, group=size, axes=group_axes(mesh, size), depth=depth))
    return out


def _compile(fn, *args, **static):
    """Lower and compile for the devices the arguments' shardings name. A program for devices this process
    has no client for (a TPU topology) is kept out of the persistent compilation cache: jax would write it
    and then fail to read it back ("PjRtCompiler must be constructed with a Client"), warning every run."""
    leaves = [a for a in jax.tree.leaves(args) if getattr(a, "sharding", None) is not None]
    foreign = any(d.platform != jax.default_backend() for a in leaves[:1] for d in a.sharding.device_set)
    was = jax.config.jax_persistent_cache_min_compile_time_secs
    if foreign:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1e9)  # never worth writing
    try:
        return jax.jit(fn, static_argnames=tuple(static)).lower(*args, **static).compile()
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", was)


def _key(mesh: Mesh):
    k = jax.eval_shape(lambda: jax.random.key(0))
    return jax.ShapeDtypeStruct(
        k.shape, k.dtype, sharding=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    )


def _prompts(plan: ShardingPlan, batch: int, width: int):
    return (
        jax.ShapeDtypeStruct((batch, width), jnp.int32, sharding=plan.rows(2)),
        jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=plan.rows(1)),
    )


def plan_vanilla(cfg: ModelConfig, mesh: Mesh, *, batch: int, context: int) -> dict:
    """Vanilla decoding's compiled generation: bytes per device and the collectives of one step."""
    cfg, plan = _expanded(cfg, mesh)
    params = abstract_params(cfg, plan.param_shardings(cfg))
    new = max(1, context // 4)
    spec = DecodeSpec(cfg, new, context, plan=plan)
    c = _compile(generate, params, *_prompts(plan, batch, context - new), _key(mesh), spec=spec)
    m = c.memory_analysis()
    return {
        "weights": bytes_per_device(params),
        "cache": cache_bytes(cfg, plan, batch, context),
        "temporaries": m.temp_size_in_bytes,
        "collectives": collectives(c.as_text(), mesh),
        "notes": list(plan.notes),
        "cost": dict(c.cost_analysis() or {}),
    }


def plan_speculative(
    target: ModelConfig,
    draft: ModelConfig | None,
    method_name: str,
    mesh: Mesh,
    *,
    batch: int,
    context: int,
    shape: dict | None = None,
    options: dict | None = None,
) -> dict:
    """The method's whole speculative loop compiled for `mesh`: bytes per device and one round's
    collectives. `shape`: the registry's k / depth / width (None: the method's default); `options`: its
    options (DEL plans with cost="layers": a measured cost needs the machine)."""
    from jaxspec import methods
    from jaxspec.speculative import Model, make_spec, run_speculation
    from jaxspec.speculative.api import bind_drafter

    options = dict(options or {})
    if method_name == "del":
        options.setdefault("cost", "layers")
    r = methods.resolve(method_name, draft=draft is not None, **(shape or {}), **options)
    if r.method is None:
        raise ValueError(f"method {method_name!r} drafts nothing: plan vanilla decoding instead")
    tcfg, tplan = _expanded(target, mesh)
    tparams = abstract_params(tcfg, tplan.param_shardings(tcfg))
    needs_model = r.info.draft_model != "none" and draft is not None
    if needs_model:
        replicated = method_name == "easyspec"
        dcfg, dplan = (draft, replicated_plan(mesh)) if replicated else _expanded(draft, mesh)
        dparams = abstract_params(dcfg, dplan.param_shardings(dcfg))
        source = Model(dparams, dcfg, dplan)
    else:
        source, dparams = Model(None, tcfg, tplan), None
    drafter = bind_drafter(r.drafter, source, None, r.method, context, False, tplan)
    prep = _compile(lambda d, t: drafter.prepare_for(d, t), dparams, tparams)
    prepared = _abstract(
        jax.eval_shape(lambda d, t: drafter.prepare_for(d, t), dparams, tparams), prep.output_shardings
    )
    new = max(1, context // 4)
    width = context - new - r.method.shape.nodes - 2
    spec = make_spec(tcfg, drafter, r.method, prompt_len=width, max_new_tokens=new, max_len=context, plan=tplan)
    c = _compile(run_speculation, tparams, prepared, *_prompts(tplan, batch, width), _key(mesh), spec=spec)
    m = c.memory_analysis()
    draft_cache = 0
    if needs_model:
        draft_cache = cache_bytes(source.cfg, source.plan, batch, drafter.cache_slots(context, r.method.shape))
    first, later = _draft_reads(method_name, drafter, r.drafter, prepared if needs_model else None, tparams, options)
    return {
        "method": method_name,
        "shape": {"name": r.method.name, "depth": r.method.shape.depth, "width": r.method.shape.width},
        "draft_reads": None if first is None else {"first_step": first, "later_steps": later},
        "target_weights": bytes_per_device(tparams),
        "draft_weights": bytes_per_device(prepared) if needs_model else 0,
        "target_cache": cache_bytes(tcfg, tplan, batch, context),
        "draft_cache": draft_cache,
        "temporaries": m.temp_size_in_bytes,
        "outputs": m.output_size_in_bytes,
        "arguments": m.argument_size_in_bytes,
        "aliased": m.alias_size_in_bytes,
        "collectives": collectives(c.as_text(), mesh),
        "target_notes": list(tplan.notes),
        "draft_notes": list(source.plan.notes) if needs_model else [],
        "cost": dict(c.cost_analysis() or {}),
    }


def _draft_reads(name: str, drafter, unbound, prepared, tparams, options: dict) -> tuple[int | None, int | None]:
    """Weight bytes one device reads in a round's first draft step and in each later one, by method:
    a draft model's whole weights (chain, tree); EasySpec's whole draft in step 1 (calibration runs every
    layer) and after it each device one member's attention per group plus every MLP (its layer-parallel
    step); LS / FS / DV the target's first `exit_layer` layers and its head; the lookup nothing. DEL and the
    cascade choose per round what they read: (None, None), not modeled."""
    if name in ("chain", "tree"):
        w = bytes_per_device(prepared)
        return w, w
    if name == "easyspec":
        whole = bytes_per_device(prepared)
        layers = prepared["model"]["layers"]
        attn = [bytes_per_device({k: v for k, v in layer.items() if k in ATTN_KEYS}) for layer in layers]
        saved = sum(sum(attn[l] for l in g) * (1 - 1 / len(g)) for g in drafter.groups if len(g) > 1)
        return whole, int(whole - saved)
    if name in ("ls", "fs", "dv"):
        e = options["exit_layer"]
        head = {k: v for k, v in tparams.items() if k in ("final_norm", "lm_head")}
        if "lm_head" not in head:  # tied: the embedding is the head
            head["embed"] = tparams["embed"]
        w = bytes_per_device(tparams["layers"][:e]) + bytes_per_device(head)
        return w, w
    if name == "ngram":
        return 0, 0
    del unbound
    return None, None


def roofline(spec: dict, vanilla: dict, acc: Accelerator, *, tau: float, latency_us: float) -> dict:
    """Bandwidth-only times: a vanilla step reads the target's per-device weights and cache once and pays its
    step's collectives; a round reads the target's once and runs `depth` draft steps (`_draft_reads`; the
    draft cache each step; a collective in the round's inner loop `depth` − 1 times), each collective an
    assumed latency plus its bytes over the link. Speedup = τ · t_step / t_round."""
    bw, link, lat = acc.hbm_gb_per_s * 1e9, acc.link_gb_per_s * 1e9, latency_us * 1e-6
    depth = spec["shape"]["depth"]

    def comm(colls, inner: int) -> tuple[float, int]:
        runs = [inner if c["depth"] > 1 else 1 for c in colls if c["kind"] != "all-reduce" or c["shape"] != "pred[]"]
        kept = [c for c in colls if c["kind"] != "all-reduce" or c["shape"] != "pred[]"]
        t = sum(n * (lat + c["bytes"] / link) for n, c in zip(runs, kept))
        return t, sum(runs)

    t_comm_step, n_step = comm(vanilla["collectives"], 1)
    t_step = (vanilla["weights"] + vanilla["cache"]) / bw + t_comm_step
    if spec["draft_reads"] is None:
        return {"vanilla_step_ms": t_step * 1e3, "round_ms": None, "speedup": None,
                "why_not": f"{spec['method']} chooses what it reads per round: not modeled"}  # fmt: skip
    d = spec["draft_reads"]
    drafting = d["first_step"] + (depth - 1) * d["later_steps"] + depth * spec["draft_cache"]
    reads = spec["target_weights"] + spec["target_cache"] + drafting
    t_comm_round, n_round = comm(spec["collectives"], max(depth - 1, 1))
    t_round = reads / bw + t_comm_round
    return {
        "vanilla_step_ms": t_step * 1e3,
        "vanilla_collectives_per_step": n_step,
        "round_ms": t_round * 1e3,
        "round_collectives": n_round,
        "tau": tau,
        "speedup": tau * t_step / t_round,
        "assumed": f"{acc.name}: {acc.hbm_gb_per_s:g} GB/s memory, {acc.link_gb_per_s:g} GB/s link, "
        f"{latency_us:g} µs per collective (assumed)",
    }


def verification_widths(cfg: ModelConfig, mesh: Mesh, widths, *, context: int) -> list[dict]:
    """The target's forward over `w` new tokens at a `context`-slot cache, per width: XLA's cost analysis
    (flops, bytes accessed; on TPU its own time estimate `optimal_seconds`)."""
    from jaxspec.masks import causal_mask
    from jaxspec.model import forward

    cfg, plan = _expanded(cfg, mesh)
    params = abstract_params(cfg, plan.param_shardings(cfg))
    out = []
    for w in widths:
        cache = jax.eval_shape(lambda: init_cache(cfg, 1, context))
        cache = _abstract(cache, plan.cache_shardings(cache))
        toks = jax.ShapeDtypeStruct((1, w), jnp.int32, sharding=plan.rows(2))

        def fwd(p, t, c):
            pos = c.lengths[:, None] + jnp.arange(t.shape[1], dtype=jnp.int32)
            return forward(p, t, c, cfg, positions=pos, mask=causal_mask(c.lengths, t.shape[1], context))[0]

        cost = dict(_compile(fwd, params, toks, cache).cost_analysis() or {})
        out.append({"width": w, "flops": cost.get("flops"), "bytes_accessed": cost.get("bytes accessed"),
                    "optimal_seconds": cost.get("optimal_seconds")})  # fmt: skip
    return out


def peak_bytes(spec: dict) -> int:
    """What one device must hold while the loop runs: its arguments, temporaries and outputs not aliased."""
    return spec["arguments"] + spec["temporaries"] + spec["outputs"] - spec["aliased"]


def _largest(fits, step: int) -> int:
    """The largest multiple of `step` that `fits` (monotone: fits(n) implies fits(m) for m <= n), 0 when
    `step` does not: doubling, then bisection — ~2·log2(answer / step) compiles."""
    if not fits(step):
        return 0
    lo, hi = step, 2 * step
    while fits(hi):
        lo, hi = hi, 2 * hi
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def max_batch(target, draft, method_name: str, mesh: Mesh, *, context: int, hbm_bytes: float, **kw) -> int:
    """The largest batch whose compiled loop fits `hbm_bytes` per device (0: not even one row), by bisection
    on the compiled bytes (as MaxText's estimator does for training); a multiple of the "data" axis."""

    def fits(b: int) -> bool:
        return (
            peak_bytes(plan_speculative(target, draft, method_name, mesh, batch=b, context=context, **kw)) <= hbm_bytes
        )

    return _largest(fits, max(1, mesh.shape.get("data", 1)))


def max_context(target, draft, method_name: str, mesh: Mesh, *, batch: int, hbm_bytes: float, step: int = 256, **kw):
    """The largest context (cache slots, a multiple of `step`) whose compiled loop fits `hbm_bytes` per
    device at `batch` rows, within the target's positions."""
    limit = target.max_position_embeddings

    def fits(c: int) -> bool:
        if c > limit:
            return False
        return peak_bytes(plan_speculative(target, draft, method_name, mesh, batch=batch, context=c, **kw)) <= hbm_bytes

    return _largest(fits, step)
