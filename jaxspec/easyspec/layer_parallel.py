"""The layer-parallel ("fuzzy") draft forward: EasySpec's group step, on one device (vmap) or on the
mesh's `layer` axis (shard_map).

A group g_1..g_N of consecutive layers with input h (exact) runs every member's attention from h:
    a_j = Attn_{g_j}(h)              # K/V of the new tokens computed from n_{g_j}(h), not the true input
  ATTN_ONLY (the paper; default):  x = h; for j: x += a_j; x += MLP_{g_j}(x)
  DIRECT_MLP (ablation):           x = h + Σ_j (a_j + MLP_{g_j}(h + a_j))
The first member is exact; the others' outputs and K/V are "fuzzy" until calibration (calibration.py).

Placement, multi-device: every device on the `layer` axis holds the whole draft and the whole draft
cache, replicated, as the official code does. Device j runs member j's attention (a `lax.switch` on its
axis index: only that branch's weights are read), and ONE all-gather brings every member's output and
new K/V rows to every device; each then writes all N members' K/V into its cache copy (which so stays
replicated and exact wherever calibration rewrote it) and runs the MLPs (ATTN_ONLY) or sums the outputs
(DIRECT_MLP, whose MLP also ran on device j). Calibration therefore needs no communication at all.
Per group step the all-gather moves N · B·T·(D + 2·Hkv·K) floats; the README gives the figures.

Single device: the N attention blocks' projections (q/k/v, output) are vmapped over the group's
attention weights, stacked once by `stack_group_weights` (extra memory: the grouped layers' attention
weights, ~12% of the Qwen-0.5B draft's layer bytes); each member's softmax reads its own cache in place."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxspec.cache import KVCache
from jaxspec.config import ModelConfig
from jaxspec.layers import attend, attention_mix, linear, mlp_block, project_qkv, write_kv
from jaxspec.model import decoder_layer, embed, head
from jaxspec.sharding import LAYER

ATTN_ONLY, DIRECT_MLP = "attn_only", "direct_mlp"
POLICIES = (ATTN_ONLY, DIRECT_MLP)
ATTN_KEYS = ("attn_norm", "wq", "wk", "wv", "bq", "bk", "bv", "wo")


def stack_group_weights(params, groups) -> tuple:
    """Per group: its members' attention weights stacked on a leading axis (None for singletons)."""

    def stack(g):
        first = params["layers"][g[0]]
        return {k: jnp.stack([params["layers"][l][k] for l in g]) for k in ATTN_KEYS if k in first}

    return tuple(None if len(g) == 1 else stack(g) for g in groups)


def member_attention(p: dict, h, k_cache, v_cache, positions, write_at, mask, cfg: ModelConfig):
    """One member's attention from the group input h f32[B, T, D]: (delta f32[B, T, D], new k and v
    f32[B, T, Hkv, K]). The cache write is local (attention must see the new rows); the caller writes
    the returned rows into the cache every device keeps."""
    q, k, v = project_qkv(p, h, positions, cfg)
    a = attend(p, q, write_kv(k_cache, k, write_at), write_kv(v_cache, v, write_at), mask, cfg)
    return a, k, v


def _vmapped_members(params, stacked, group, h, ks, vs, positions, write_at, mask, cfg, policy):
    """Single device: the members' weight-bound projections (q/k/v and output) vmapped over the stacked
    weights; each member's attention reads its own cache, written in place (stacking the N caches
    instead would copy N·B·Hkv·S·K floats per step, growing with the context)."""
    q, k, v = jax.vmap(functools.partial(project_qkv, cfg=cfg), in_axes=(0, None, None))(stacked, h, positions)
    mixed = []  # q [N, B, T, H, K]; k, v [N, B, T, Hkv, K]
    for j, l in enumerate(group):
        ks[l] = write_kv(ks[l], k[j], write_at)
        vs[l] = write_kv(vs[l], v[j], write_at)
        mixed.append(attention_mix(q[j], ks[l], vs[l], mask, cfg))
    a = jax.vmap(functools.partial(linear, precision=cfg.lax_precision))(
        jnp.stack(mixed), stacked["wo"]
    )  # [N, B, T, D]
    outs = [a[j] for j in range(len(group))]
    if policy == DIRECT_MLP:
        outs = [o + mlp_block(params["layers"][l], h + o, cfg) for o, l in zip(outs, group)]
    return outs


def _sharded_members(params, group, h, ks, vs, positions, write_at, mask, cfg, policy, mesh: Mesh):
    """Multi-device: member j on device j of the `layer` axis, then one all-gather of
    [delta | k rows | v rows] packed along the feature axis."""
    N, A = len(group), mesh.shape[LAYER]
    if N > A:
        raise ValueError(f"group {list(group)} has {N} layers but the mesh's layer axis only {A} devices")
    B, T, D = h.shape
    KV = cfg.num_kv_heads * cfg.head_dim
    layers = [params["layers"][l] for l in group]
    kcs, vcs = [ks[l] for l in group], [vs[l] for l in group]

    def body(layers, h, kcs, vcs, positions, write_at, mask):
        def member(i):
            def run():
                a, k, v = member_attention(layers[i], h, kcs[i], vcs[i], positions, write_at, mask, cfg)
                if policy == DIRECT_MLP:
                    a = a + mlp_block(layers[i], h + a, cfg)
                return jnp.concatenate([a, k.reshape(B, T, KV), v.reshape(B, T, KV)], axis=-1)

            return run

        def idle():  # devices past the group's size (a short last group) compute nothing
            return jnp.zeros((B, T, D + 2 * KV), h.dtype)

        j = jnp.minimum(lax.axis_index(LAYER), N)
        packed = lax.switch(j, [member(i) for i in range(N)] + [idle])  # [B, T, D + 2KV], device-varying
        return lax.all_gather(packed, LAYER)  # [A, B, T, D + 2KV], the same on every device

    # check_vma off: all_gather's result is device-invariant, which the vma typing does not infer here
    gathered = jax.shard_map(body, mesh=mesh, in_specs=(P(),) * 7, out_specs=P(), check_vma=False)(
        layers, h, kcs, vcs, positions, write_at, mask
    )
    shape = (B, T, cfg.num_kv_heads, cfg.head_dim)
    for j, l in enumerate(group):  # every device writes every member's new rows: the caches stay replicated
        ks[l] = write_kv(ks[l], gathered[j, ..., D : D + KV].reshape(shape), write_at)
        vs[l] = write_kv(vs[l], gathered[j, ..., D + KV :].reshape(shape), write_at)
    return [gathered[j, ..., :D] for j in range(N)]


def group_step(
    params, stacked, group, h, ks, vs, positions, write_at, mask, cfg: ModelConfig, policy: str, mesh: Mesh | None
):
    """One group: h f32[B, T, D] → x f32[B, T, D]; ks/vs are the per-layer cache lists, updated in place
    at `write_at` for every member."""
    if mesh is None:
        outs = _vmapped_members(params, stacked, group, h, ks, vs, positions, write_at, mask, cfg, policy)
    else:
        outs = _sharded_members(params, group, h, ks, vs, positions, write_at, mask, cfg, policy, mesh)
    if policy == DIRECT_MLP:
        return h + sum(outs[1:], outs[0])
    x = h
    for o, l in zip(outs, group):  # ATTN_ONLY: the MLPs stay sequential, each after its own attention delta
        x = x + o
        x = x + mlp_block(params["layers"][l], x, cfg)
    return x


def fuzzy_layers(
    params,
    stacked,
    groups,
    x,
    cache: KVCache,
    positions,
    mask,
    cfg: ModelConfig,
    policy: str,
    mesh: Mesh | None,
    return_hiddens: bool = False,
):
    """Every layer by the partition `groups`, writing K/V at `cache.lengths`: (x, cache, group inputs)."""
    ks, vs = list(cache.k), list(cache.v)
    inputs = []
    for g, w in zip(groups, stacked):
        if return_hiddens:
            inputs.append(x)
        if len(g) == 1:
            l = g[0]
            x, ks[l], vs[l] = decoder_layer(params["layers"][l], x, ks[l], vs[l], positions, cache.lengths, mask, cfg)
        else:
            x = group_step(params, w, g, x, ks, vs, positions, cache.lengths, mask, cfg, policy, mesh)
    return x, cache.replace(k=tuple(ks), v=tuple(vs)), inputs


def fuzzy_forward(
    params,
    stacked,
    groups,
    tokens,
    cache: KVCache,
    positions,
    mask,
    cfg: ModelConfig,
    policy: str,
    mesh: Mesh | None,
    logits_at=None,
    advance=None,
):
    """The layer-parallel draft over T new tokens i32[B, T] at slots `cache.lengths`: (logits, cache), as
    `model.forward` (logits at `logits_at` only, when given; lengths advanced by `advance`, default T)."""
    B, T = tokens.shape
    x, cache, _ = fuzzy_layers(
        params, stacked, groups, embed(params, tokens, cfg), cache, positions, mask, cfg, policy, mesh
    )
    if logits_at is not None:
        x = jnp.take_along_axis(x, logits_at[:, :, None], axis=1)
    advance = jnp.full((B,), T, jnp.int32) if advance is None else advance
    return head(params, x, cfg), cache.replace(lengths=cache.lengths + advance)
