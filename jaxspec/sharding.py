"""Sharding, declared once: logical axis names → mesh axes → `PartitionSpec`s.

A model is tensor-parallel over the mesh's *model axes*, "layer" × "tp" (`MODEL_AXES`: every axis but
"data"), as one dimension of layer·tp devices: attention heads and MLP width are split, the
activations stay replicated (one all-reduce after each attention and MLP block: the right trade for
low-latency decode). A dimension the whole model axes cannot split evenly is split over the largest
part of them that can (`_split_axes`) and replicated over the rest; what no part divides is replicated,
never padded (`plan_for`, and `ShardingPlan.notes` says what was done and why). Below, "tp" is the
number of devices a dimension is split over:
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
over it, the weights replicated over it and split over the model axes as above — e.g. `--mesh data=2,tp=4`
runs a batch of 8 as two groups of 4 rows, each on 4 tensor-parallel devices; the batch must divide by the
axis's size (an error names both).
"layer" is EasySpec's axis (a draft group's members run on its devices, `easyspec.layer_parallel`). The
target and every other model spans it too — `PartitionSpec(("layer", "tp"))` on a split dimension — so no
device of the mesh holds an idle copy of the target: the paper's layout, the target tensor-parallel over
all 8 GPUs and the draft's group members one per GPU. EasySpec's draft itself is replicated on the whole
mesh (`replicated_plan`), as the author's code runs it: each device runs any of its layers, and
calibration runs all of them, with no communication."""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxspec.cache import KVCache
from jaxspec.config import ModelConfig
from jaxspec.params import ArrayInfo, is_info, layer_info, param_info

TP = "tp"
LAYER = "layer"
DATA = "data"
MODEL_AXES = (LAYER, TP)  # the axes a model's split dimensions span, in mesh order
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


def parse_mesh_axes(spec: str) -> dict[str, int]:
    """'tp=2,layer=4' → {"tp": 2, "layer": 4}; a clear error for anything else."""
    axes = {}
    for item in spec.split(","):
        name, _, size = item.partition("=")
        if not size.isdigit():
            raise ValueError(f"bad mesh spec {spec!r}: expected NAME=SIZE[,NAME=SIZE]")
        axes[name.strip()] = int(size)
    return axes


def parse_mesh(spec: str | None) -> Mesh | None:
    """'tp=2' or 'tp=2,layer=4' → Mesh; None/'' → None (single device, no sharding)."""
    return make_mesh(parse_mesh_axes(spec)) if spec else None


def model_axes(mesh: Mesh | None) -> tuple[str, ...]:
    """The mesh's axes of size > 1 that a model's split dimensions span ("layer", "tp"), in mesh order."""
    if mesh is None:
        return ()
    return tuple(a for a in mesh.axis_names if a in MODEL_AXES and mesh.shape[a] > 1)


def model_parallelism(mesh: Mesh | None) -> int:
    """How many ways the model axes together cut a dimension: the product of their sizes."""
    return math.prod(mesh.shape[a] for a in model_axes(mesh))


def _size(mesh: Mesh, axes: tuple[str, ...]) -> int:
    return math.prod(mesh.shape[a] for a in axes)


def _name(mesh: Mesh, axes: tuple[str, ...]) -> str:
    """'tp=4', 'layer=4' or 'layer×tp=8': axes and how many ways they split, for notes and errors."""
    return f"{'×'.join(axes or (TP,))}={_size(mesh, axes)}"


def _split_axes(mesh: Mesh, divides) -> tuple[str, ...]:
    """The model axes one dimension is split over: of the model axes' subsets, the one with the most
    devices whose count `divides(n)` accepts (a tie goes to the subset with "tp"); () when none does.
    All of them when it can — else a part, so that e.g. the 9 heads of a layer=2 × tp=3 mesh are still
    split 3 ways (over tp, replicated over layer) rather than replicated on all 6 devices."""
    axes = model_axes(mesh)
    subsets = [c for r in range(len(axes), 0, -1) for c in itertools.combinations(axes, r)]
    subsets.sort(key=lambda c: (-_size(mesh, c), TP not in c))
    return next((c for c in subsets if divides(_size(mesh, c))), ())


def attention_axes(cfg: ModelConfig, mesh: Mesh) -> tuple[str, ...]:
    """The model axes the attention heads are split over: n devices split them when n divides the query
    heads and the kv heads and n divide each other (fewer kv heads than n: `kv_repeats`)."""
    H, Hkv = cfg.num_heads, cfg.num_kv_heads
    return _split_axes(mesh, lambda n: H % n == 0 and (Hkv % n == 0 or n % Hkv == 0))


@dataclasses.dataclass(frozen=True)
class ShardingPlan:
    """A mesh and the logical-axis rules for one model on it (hashable: a static jit argument)."""

    mesh: Mesh
    rules: tuple[tuple[str, str | tuple[str, ...] | None], ...]  # logical axis → mesh axis, axes or None
    notes: tuple[str, ...] = ()  # what `plan_for` replicated because the model axes could not split it

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
    """The tensor-parallel plan of `cfg` on `mesh`: each split dimension over as many of the model axes
    ("layer" × "tp") as divide it (`_split_axes`), rows over "data"; the notes say what the whole model
    axes could not split and what was done instead."""
    H, Hkv, F, V = cfg.num_heads, cfg.num_kv_heads, cfg.intermediate_size, cfg.vocab_size
    full, whole = model_axes(mesh), _name(mesh, model_axes(mesh))
    attn = attention_axes(cfg, mesh)
    kv = attn if Hkv % _size(mesh, attn) == 0 else ()
    mlp = _split_axes(mesh, lambda n: F % n == 0)
    vocab = _split_axes(mesh, lambda n: V % n == 0)

    def fallback(what: str, axes: tuple[str, ...], reason: str) -> list[str]:
        if axes == full:
            return []
        done = f"split over {_name(mesh, axes)} only" if axes else "replicated"
        return [f"{what} {done}: {whole} {reason}"]

    n = model_parallelism(mesh)
    notes = fallback(
        "attention",
        attn,
        f"does not divide the {H} query heads" if H % n else f"and the {Hkv} kv heads do not divide each other",
    )
    if attn and attn != kv:
        notes.append(f"kv heads replicated: {Hkv} kv heads for {_name(mesh, attn)} (GQA)")
    notes += fallback("MLP", mlp, f"does not divide the MLP width {F}")
    notes += fallback("vocabulary", vocab, f"does not divide {V}")

    def on(axes: tuple[str, ...]):  # one axis by its name (P("tp")), several as a tuple (P(("layer", "tp")))
        return None if not axes else axes[0] if len(axes) == 1 else axes

    rules = (
        ("heads", on(attn)),
        ("kv_heads", on(kv)),
        ("mlp", on(mlp)),
        ("vocab", on(vocab)),
        ("embed", None),
        ("head_dim", None),
        ("batch", DATA if mesh.shape.get(DATA, 1) > 1 else None),
        ("seq", None),
    )
    return ShardingPlan(mesh, rules, tuple(notes))


def kv_repeats(cfg: ModelConfig, mesh: Mesh | None) -> int:
    """How many copies of each kv head let the attention's axes split them: n / Hkv when a GQA model has
    fewer kv heads than the n devices its heads are split over (`attention_axes`), else 1. Left
    replicated, those kv heads made XLA write the
    cache split by kv head and all-gather every layer's whole cache every step (measured in the compiled
    program: tests/test_sharding.py); repeated, as vLLM does, each device holds the one kv head its query
    heads read, and no cache moves."""
    if mesh is None:
        return 1
    n, Hkv = _size(mesh, attention_axes(cfg, mesh)), cfg.num_kv_heads
    return n // Hkv if n > Hkv and n % Hkv == 0 else 1


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
    new_plan, split = plan_for(new_cfg, plan.mesh), _name(plan.mesh, attention_axes(cfg, plan.mesh))
    new_plan = dataclasses.replace(
        new_plan,
        notes=new_plan.notes
        + (f"kv heads repeated {r}x: {cfg.num_kv_heads} kv heads for {split} (GQA; one per device)",),
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


def bytes_per_device(tree) -> int:
    """Bytes one device holds of the arrays in `tree`: each leaf's shard (its whole size when it is not
    a sharded jax.Array). Every plan here splits evenly, so every device holding a leaf holds this much."""
    total = 0
    for x in jax.tree.leaves(tree):
        sharding = getattr(x, "sharding", None)
        shape = sharding.shard_shape(x.shape) if sharding is not None else x.shape
        total += math.prod(shape) * x.dtype.itemsize
    return total


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
    "parse_mesh_axes",
    "plan_for",
    "model_axes",
    "model_parallelism",
    "attention_axes",
    "MODEL_AXES",
    "replicated_plan",
    "shard_params",
    "shard_model",
    "kv_repeats",
    "repeat_kv_heads",
    "expand_for_mesh",
    "constrain_cache",
    "constrain_rows",
    "bytes_per_device",
]
