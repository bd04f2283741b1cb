"""Sharding, declared once: logical axis names → mesh axes → `PartitionSpec`s.

The target is tensor-parallel over the mesh axis "tp": attention heads and MLP width are split, the
activations stay replicated (one all-reduce after each attention and MLP block: the right trade for
low-latency decode). What cannot be split evenly is replicated instead, never padded (`plan_for`, and
`ShardingPlan.notes` says what was replicated and why):
  * attention (q/k/v/o weights and the KV cache) is split by heads when tp divides the query heads and
    the kv heads divide by tp or tp by them (GQA with fewer kv heads than devices: `shard_model` and
    `load_model` repeat each kv head tp / Hkv times, so each device holds the one its query heads read —
    `expand_for_mesh`; `plan_for` alone on such a config replicates kv projections and cache);
    otherwise the whole attention is replicated — the 0.5B's 14 heads at tp=4, the 1.5B's 12 at tp=8 —
    and only the MLP (and the vocabulary) is split;
  * the MLP is split by its width when tp divides it, else replicated;
  * a vocab that does not divide by tp is left replicated.
Replicating keeps every device busy on the same work for that block (no speedup there, no padding
FLOPs or uneven shards either); padding heads would shard them but change the weights' shapes and
make checkpoints mesh-dependent.
A "data" mesh axis splits the batch: the KV cache's rows (and so every per-row computation) are sharded
over it, the weights replicated over it and split over "tp" as above — e.g. `--mesh data=2,tp=4` runs
a batch of 8 as two groups of 4 rows, each on 4 tensor-parallel devices; the batch must divide by the
axis's size (an error names both). Other mesh axes (e.g. "layer" for EasySpec drafts) replicate the
target. EasySpec's draft is replicated on the whole mesh (`replicated_plan`)."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxspec.cache import KVCache
from jaxspec.config import ModelConfig
from jaxspec.params import ArrayInfo, is_info, layer_info, param_info

TP = "tp"
DATA = "data"
CACHE_AXES = ("batch", "kv_heads", "seq", "head_dim")


def make_mesh(axes: dict[str, int] | None = None, devices=None) -> Mesh:
    """A `Mesh` with named axes, e.g. make_mesh({"tp": 4}); the default puts every device on "tp".
    Built by `jax.make_mesh`, which orders the devices by the interconnect's topology (a ring on a TPU
    slice, so the tp all-reduces go to neighbours) instead of by id; its axes are Auto (the compiler
    propagates shardings from the `PartitionSpec`s), where jax.make_mesh would default to Explicit."""
    devices = list(jax.devices() if devices is None else devices)
    axes = dict(axes or {TP: len(devices)})
    n = math.prod(axes.values())
    if n > len(devices):
        raise ValueError(f"mesh {axes} needs {n} devices, only {len(devices)} available")
    return jax.make_mesh(
        tuple(axes.values()), tuple(axes), axis_types=(AxisType.Auto,) * len(axes), devices=devices[:n]
    )


def parse_mesh(spec: str | None) -> Mesh | None:
    """'tp=2' or 'tp=2,layer=4' → Mesh; None/'' → None (single device, no sharding)."""
    if not spec:
        return None
    axes = {}
    for item in spec.split(","):
        name, _, size = item.partition("=")
        if not size.isdigit():
            raise ValueError(f"bad mesh spec {spec!r}: expected NAME=SIZE[,NAME=SIZE]")
        axes[name.strip()] = int(size)
    return make_mesh(axes)


@dataclasses.dataclass(frozen=True)
class ShardingPlan:
    """A mesh and the logical-axis rules for one model on it (hashable: a static jit argument)."""

    mesh: Mesh
    rules: tuple[tuple[str, str | None], ...]
    notes: tuple[str, ...] = ()  # what `plan_for` replicated because tp could not split it

    def spec(self, axes: tuple[str | None, ...]) -> P:
        rules = dict(self.rules)
        return P(*(rules.get(a) if a else None for a in axes))

    def sharding(self, axes: tuple[str | None, ...]) -> NamedSharding:
        return NamedSharding(self.mesh, self.spec(axes))

    def param_shardings(self, cfg: ModelConfig):
        return jax.tree.map(lambda i: self.sharding(i.axes), param_info(cfg), is_leaf=is_info)

    def cache_shardings(self, cache: KVCache) -> KVCache:
        kv = self.sharding(CACHE_AXES)
        return KVCache(k=tuple(kv for _ in cache.k), v=tuple(kv for _ in cache.v), lengths=self.sharding(("batch",)))

    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    def rows(self, ndim: int) -> NamedSharding:
        """A per-row array [B, ...] (tokens, lengths, counts): rows as the batch rule says (over "data",
        or replicated), its other dimensions replicated; a scalar (ndim 0) replicated."""
        return self.sharding(("batch",) + (None,) * (ndim - 1)) if ndim else self.replicated()


def plan_for(cfg: ModelConfig, mesh: Mesh) -> ShardingPlan:
    tp = mesh.shape.get(TP, 1)
    H, Hkv, F = cfg.num_heads, cfg.num_kv_heads, cfg.intermediate_size
    notes = []
    split_attention = H % tp == 0 and (Hkv % tp == 0 or tp % Hkv == 0)
    if tp > 1 and not split_attention:
        notes.append(
            f"attention replicated: tp={tp} does not divide the {H} query heads"
            if H % tp
            else f"attention replicated: tp={tp} and the {Hkv} kv heads do not divide each other"
        )
    elif tp > 1 and Hkv % tp:
        notes.append(f"kv heads replicated: {Hkv} kv heads for tp={tp} (GQA)")
    if tp > 1 and F % tp:
        notes.append(f"MLP replicated: tp={tp} does not divide the MLP width {F}")
    if tp > 1 and cfg.vocab_size % tp:
        notes.append(f"vocabulary replicated: tp={tp} does not divide {cfg.vocab_size}")

    def on(ok):
        return TP if tp > 1 and ok else None

    rules = (
        ("heads", on(split_attention)),
        ("kv_heads", on(split_attention and Hkv % tp == 0)),
        ("mlp", on(F % tp == 0)),
        ("vocab", on(cfg.vocab_size % tp == 0)),
        ("embed", None),
        ("head_dim", None),
        ("batch", DATA if mesh.shape.get(DATA, 1) > 1 else None),
        ("seq", None),
    )
    return ShardingPlan(mesh, rules, tuple(notes))


def kv_repeats(cfg: ModelConfig, mesh: Mesh | None) -> int:
    """How many copies of each kv head let tp split them: tp / Hkv when a GQA model has fewer kv heads than
    tp devices (and tp splits the query heads), else 1. Left replicated, those kv heads made XLA write the
    cache split by kv head and all-gather every layer's whole cache every step (measured in the compiled
    program: tests/test_sharding.py); repeated, as vLLM does, each device holds the one kv head its query
    heads read, and no cache moves."""
    tp = mesh.shape.get(TP, 1) if mesh is not None else 1
    H, Hkv = cfg.num_heads, cfg.num_kv_heads
    return tp // Hkv if tp > Hkv and tp % Hkv == 0 and H % tp == 0 else 1


def repeat_kv_heads(params, cfg: ModelConfig, r: int):
    """The same model with each kv head r times in a row (wk, wv, bk, bv): (params, cfg with r·Hkv kv heads).
    Query head h reads kv head h // G; with G / r queries per kv head it reads copy h // (G / r), whose
    original is (h // (G / r)) // r = h // G — the same keys and values, so the outputs are unchanged."""
    if r == 1:
        return params, cfg
    Hkv, K = cfg.num_kv_heads, cfg.head_dim

    def rep(a):  # [Hkv*K, ...] → [Hkv*r*K, ...]
        return jnp.repeat(a.reshape(Hkv, K, *a.shape[1:]), r, axis=0).reshape(Hkv * r * K, *a.shape[1:])

    layers = [{k: rep(v) if k in KV_LEAVES else v for k, v in layer.items()} for layer in params["layers"]]
    return dict(params, layers=layers), cfg.replace(num_kv_heads=Hkv * r)


KV_LEAVES = ("wk", "wv", "bk", "bv")


def expand_for_mesh(params, cfg: ModelConfig, plan: ShardingPlan):
    """Params already placed by `plan` (= plan_for(cfg, mesh)) → (params, cfg, plan) with the kv heads
    repeated `kv_repeats` times on the devices and the plan for the expanded config (its notes say so).
    Only the kv projections are rebuilt (one jitted program, out_shardings the new plan's); every other
    leaf is the same array."""
    r = kv_repeats(cfg, plan.mesh)
    if r == 1:
        return params, cfg, plan
    new_cfg = cfg.replace(num_kv_heads=cfg.num_kv_heads * r)
    new_plan = plan_for(new_cfg, plan.mesh)
    new_plan = dataclasses.replace(
        new_plan,
        notes=new_plan.notes
        + (f"kv heads repeated {r}x: {cfg.num_kv_heads} kv heads for tp={plan.mesh.shape[TP]} (GQA; one per device)",),
    )
    kv = [{k: v for k, v in layer.items() if k in KV_LEAVES} for layer in params["layers"]]
    want = [{k: new_plan.sharding(i.axes) for k, i in layer_info(new_cfg).items() if k in KV_LEAVES} for _ in kv]
    kv = jax.jit(lambda t: repeat_kv_heads({"layers": t}, cfg, r)[0]["layers"], out_shardings=want)(kv)
    layers = [dict(layer, **new) for layer, new in zip(params["layers"], kv)]
    return dict(params, layers=layers), new_cfg, new_plan


def shard_model(params, cfg: ModelConfig, mesh: Mesh):
    """A host or device param tree onto `mesh`'s tensor-parallel plan: (params, cfg, plan), the kv heads
    repeated where tp has more devices than a GQA model has kv heads (`kv_repeats`)."""
    plan = plan_for(cfg, mesh)
    return expand_for_mesh(shard_params(params, cfg, plan), cfg, plan)


def replicated_plan(mesh: Mesh) -> ShardingPlan:
    """Every array whole on every device of `mesh`: EasySpec's draft (each device of the `layer` axis
    runs any of its layers, and calibration runs all of them, with no communication)."""
    return ShardingPlan(
        mesh, tuple((a, None) for a in ("heads", "kv_heads", "mlp", "vocab", "embed", "head_dim", "batch", "seq"))
    )


def shard_params(params, cfg: ModelConfig, plan: ShardingPlan):
    """Place a host or device param tree onto the plan's shardings."""
    return jax.device_put(params, plan.param_shardings(cfg))


def constrain_cache(cache: KVCache, plan: ShardingPlan | None) -> KVCache:
    """The cache laid out as the plan says (heads over tp, rows over data); at trace time, a clear error
    when the batch does not divide over the data axis."""
    if plan is None:
        return cache
    rows = dict(plan.rules).get("batch")
    if rows is not None and cache.lengths.shape[0] % plan.mesh.shape[rows]:
        raise ValueError(
            f"a batch of {cache.lengths.shape[0]} rows does not divide over the mesh's "
            f"{rows!r} axis of size {plan.mesh.shape[rows]}"
        )
    return jax.lax.with_sharding_constraint(cache, plan.cache_shardings(cache))


def constrain_rows(tree, plan: ShardingPlan | None):
    """Every array in `tree` laid out per row (`ShardingPlan.rows`). With `constrain_cache` this is the
    output layout the jitted entry points promise (decode.prefill / decode_loop, engine.spec_prefill /
    spec_loop / the phases) — their out_shardings in effect, declared inside them because the layout
    depends on the plan, which arrives in the static spec, after `jax.jit(out_shardings=...)` would
    need it. Without it XLA picks the outputs' layout by propagation: a row counter could come out
    split over "tp", and the next entry point's input (streaming, timing) would be re-laid out."""
    if plan is None:
        return tree
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, plan.rows(a.ndim)), tree)


__all__ = [
    "ArrayInfo",
    "ShardingPlan",
    "make_mesh",
    "parse_mesh",
    "plan_for",
    "replicated_plan",
    "shard_params",
    "shard_model",
    "kv_repeats",
    "repeat_kv_heads",
    "expand_for_mesh",
    "constrain_cache",
    "constrain_rows",
]
