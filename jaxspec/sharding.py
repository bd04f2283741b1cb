"""Sharding, declared once: logical axis names → mesh axes → `PartitionSpec`s.

The target is tensor-parallel over the mesh axis "tp": attention heads and MLP width are split, the
activations stay replicated (one all-reduce after each attention and MLP block: the right trade for
low-latency decode). Rules that cannot hold raise a clear error, checked in `plan_for`:
  * query heads and MLP width must divide by tp;
  * kv heads divide by tp (sharded), or tp divides by kv heads (GQA with fewer kv heads than devices:
    kv projections and cache are replicated instead);
  * a vocab that does not divide by tp is left replicated.
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
    if cfg.num_heads % tp:
        raise ValueError(f"mesh tp={tp} does not divide the {cfg.num_heads} attention heads")
    if cfg.intermediate_size % tp:
        raise ValueError(f"mesh tp={tp} does not divide the MLP width {cfg.intermediate_size}")
    if cfg.num_kv_heads % tp == 0:
        kv = TP
    elif tp % cfg.num_kv_heads == 0:
        kv = None  # fewer kv heads than devices: replicate K/V (each device holds every kv head)
    else:
        raise ValueError(f"mesh tp={tp} and {cfg.num_kv_heads} kv heads: neither divides the other")
    tp_axis = TP if tp > 1 else None
    rules = (("heads", tp_axis), ("kv_heads", kv if tp > 1 else None), ("mlp", tp_axis),
             ("vocab", tp_axis if cfg.vocab_size % tp == 0 else None), ("embed", None), ("head_dim", None),
             ("batch", None), ("seq", None))
    return ShardingPlan(mesh, rules)


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
