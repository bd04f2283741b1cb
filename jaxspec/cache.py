"""The KV cache: preallocated per-layer arrays plus a length per row.

`k[l]`, `v[l]`: [B, Hkv, S_max, K] in `ModelConfig.kv_dtype` (heads-major: attention reads each kv head's slots as one
contiguous [S, K] matrix); `lengths`: i32[B], the number of valid slots of each row.
Writes happen at explicit slots (`lengths` by default); rollback is lowering `lengths`; slots at or
beyond a row's length are stale and every mask built from `lengths` hides them, so rejected drafts are
simply overwritten by later writes (no zeroing). Kept as one array per layer to match the unrolled
parameter layout (see params.py)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    k: tuple[jax.Array, ...]  # per layer f32[B, Hkv, S, K]
    v: tuple[jax.Array, ...]
    lengths: jax.Array  # i32[B]

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]

    @property
    def batch(self) -> int:
        return self.k[0].shape[0]

    def replace(self, **kw) -> "KVCache":
        return dataclasses.replace(self, **kw)

    def rollback(self, lengths: jax.Array) -> "KVCache":
        """Forget every slot at or beyond `lengths` (per row); nothing is erased."""
        return self.replace(lengths=jnp.minimum(self.lengths, lengths))

    def gather(self, src_slots: jax.Array, dst_start: jax.Array) -> "KVCache":
        """Copy slots `src_slots` i32[B, N] of every layer to contiguous slots `dst_start + arange(N)`.

        Used to compact an accepted tree path; rows keep their lengths (callers set them)."""

        def move(c):  # c: [B, Hkv, S, K]
            picked = jnp.take_along_axis(c, src_slots[:, None, :, None], axis=2)  # [B, Hkv, N, K]
            return jax.vmap(lambda cr, pr, s: jax.lax.dynamic_update_slice(cr, pr, (0, s, 0)))(c, picked, dst_start)

        return self.replace(k=tuple(move(c) for c in self.k), v=tuple(move(c) for c in self.v))


def init_cache(cfg, batch: int, max_len: int, dtype=None, layers: int | None = None) -> KVCache:
    """Zeroed cache for `layers` (default all) layers of `cfg`, `max_len` slots per row, in `dtype`
    (default the config's `kv_dtype`: the params' dtype unless `cache_dtype` says otherwise)."""
    n = cfg.num_layers if layers is None else layers
    dtype = cfg.kv_dtype if dtype is None else dtype
    shape = (batch, cfg.num_kv_heads, max_len, cfg.head_dim)
    return KVCache(
        k=tuple(jnp.zeros(shape, dtype) for _ in range(n)),
        v=tuple(jnp.zeros(shape, dtype) for _ in range(n)),
        lengths=jnp.zeros((batch,), jnp.int32),
    )
