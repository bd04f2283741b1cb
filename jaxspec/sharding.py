"""Sharding, declared once: logical axis names → mesh axes → `PartitionSpec`s.

The target is tensor-parallel over the mesh axis "tp": attention heads and MLP width are split, the
activations stay replicated (one all-reduce after each attention and MLP block: the right trade for
low-latency decode). What cannot be split evenly is replicated instead, never padded (`plan_for`, and
`ShardingPlan.notes` says what was replicated and why):
  * attention (q/k/v/o weights and the KV cache) is split by heads when tp divides the query heads and
    the kv heads divide by tp or tp by them (GQA with fewer kv heads than devices: kv projections and
    cache replicated, query heads split); otherwise the whole attention is replicated — the 0.5B's 14
    heads at tp=4, the 1.5B's 12 at tp=8 — and only the MLP (and the vocabulary) is split;
  * the MLP is split by its width when tp divides it, else replicated;
  * a vocab that does not divide by tp is left replicated.
Replicating keeps every device busy on the same work for that block (no speedup there, no padding
FLOPs or uneven shards either); padding heads would shard them but change the weights' shapes and
make checkpoints mesh-dependent.
Mesh axes other than "tp" (e.g. "layer" for EasySpec drafts) replicate the target. EasySpec's draft is
replicated on the whole mesh (`replicated_plan`)."""
from __future__ import annotations

import dataclasses
import math

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from jaxspec.cache import KVCache
from jaxspec.config import ModelConfig
from jaxspec.params import ArrayInfo, is_info, param_info

TP = "tp"
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
    return jax.make_mesh(tuple(axes.values()), tuple(axes), axis_types=(AxisType.Auto,) * len(axes),
                         devices=devices[:n])


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
        return KVCache(k=tuple(kv for _ in cache.k), v=tuple(kv for _ in cache.v),
                       lengths=self.sharding(("batch",)))

    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())


def plan_for(cfg: ModelConfig, mesh: Mesh) -> ShardingPlan:
    tp = mesh.shape.get(TP, 1)
    H, Hkv, F = cfg.num_heads, cfg.num_kv_heads, cfg.intermediate_size
    notes = []
    split_attention = H % tp == 0 and (Hkv % tp == 0 or tp % Hkv == 0)
    if tp > 1 and not split_attention:
        notes.append(f"attention replicated: tp={tp} does not divide the {H} query heads" if H % tp else
                     f"attention replicated: tp={tp} and the {Hkv} kv heads do not divide each other")
    elif tp > 1 and Hkv % tp:
        notes.append(f"kv heads replicated: {Hkv} kv heads for tp={tp} (GQA)")
    if tp > 1 and F % tp:
        notes.append(f"MLP replicated: tp={tp} does not divide the MLP width {F}")
    if tp > 1 and cfg.vocab_size % tp:
        notes.append(f"vocabulary replicated: tp={tp} does not divide {cfg.vocab_size}")
    on = (lambda ok: TP if tp > 1 and ok else None)
    rules = (("heads", on(split_attention)), ("kv_heads", on(split_attention and Hkv % tp == 0)),
             ("mlp", on(F % tp == 0)), ("vocab", on(cfg.vocab_size % tp == 0)), ("embed", None),
             ("head_dim", None), ("batch", None), ("seq", None))
    return ShardingPlan(mesh, rules, tuple(notes))


def replicated_plan(mesh: Mesh) -> ShardingPlan:
    """Every array whole on every device of `mesh`: EasySpec's draft (each device of the `layer` axis
    runs any of its layers, and calibration runs all of them, with no communication)."""
    return ShardingPlan(mesh, tuple((a, None) for a in ("heads", "kv_heads", "mlp", "vocab", "embed", "head_dim",
                                                        "batch", "seq")))


def shard_params(params, cfg: ModelConfig, plan: ShardingPlan):
    """Place a host or device param tree onto the plan's shardings."""
    return jax.device_put(params, plan.param_shardings(cfg))


def constrain_cache(cache: KVCache, plan: ShardingPlan | None) -> KVCache:
    if plan is None:
        return cache
    return jax.lax.with_sharding_constraint(cache, plan.cache_shardings(cache))


__all__ = ["ArrayInfo", "ShardingPlan", "make_mesh", "parse_mesh", "plan_for", "replicated_plan", "shard_params",
           "constrain_cache"]
