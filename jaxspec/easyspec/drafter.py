"""`EasySpec`: the layer-parallel drafter (arXiv 2502.02493) behind the engine's drafter seam.

    speculate(target, draft, prompts, method=tree(4, 4), drafter=EasySpec(parallel=4))

A round, per row, with T committed tokens (the drafter keeps `history`, the token at every cache slot):
  step 1  calibrating (calibration.py): the exact sequential draft over slots [precise, T) — the
          accepted drafts and the bonus token — rewrites their K/V; else the layer-parallel draft over
          the one or two committed tokens without K/V yet (slots [cached, T)). Its last logits: depth 1.
  2..D    the layer-parallel draft on each depth's leaves (layer_parallel.py), tree mask, as DraftModel.
  commit  the accepted path's (fuzzy) K/V moved next to the prefix; its tokens recorded in `history`.
Verification is the engine's, unchanged: output stays exactly the target's (greedy) or distributed as
the target's (sampling). A partition without groups computes exactly what `DraftModel` does."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxspec.cache import KVCache, init_cache
from jaxspec.config import ModelConfig
from jaxspec.easyspec import calibration as cal
from jaxspec.easyspec.layer_parallel import ATTN_ONLY, LAYER, POLICIES, fuzzy_forward, stack_group_weights
from jaxspec.easyspec.partition import Groups, check_groups, default_groups, describe, split_groups
from jaxspec.masks import causal_mask
from jaxspec.model import forward_prompt
from jaxspec.sampling import SamplingConfig
from jaxspec.speculative.hot_vocab import HotVocab, trim_head
from jaxspec.speculative.seam import Drafter, Outcome, Round, Target, adaptive_steps, next_k
from jaxspec.speculative.tree import Tree, TreeShape, depth_step, draft_logprobs, grow_tree


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class EasySpecState:
    cache: KVCache
    history: jax.Array  # i32[B, S] the committed token at each slot (slots >= T are stale)
    precise: jax.Array  # i32[B] slots [0, precise) hold exact K/V
    cached: jax.Array  # i32[B] slots [0, cached) hold K/V (exact or fuzzy) of committed tokens
    all_accepted: jax.Array  # bool[B] the last round accepted its whole draft
    last_commit: jax.Array  # i32[B] T at the last commit (a row that did not advance since is finished)
    steps: jax.Array  # i32[] depths drafted in the current round (adaptive chains: < D)
    k: jax.Array  # i32[] depths to draft next round (an adaptive chain's k; else D)


def _write(buf, rows, at):  # buf i32[B, S] ← rows i32[B, n] at per-row slot at i32[B]
    return jax.vmap(lambda b, r, s: lax.dynamic_update_slice(b, r, (s,)))(buf, rows, at)


def _read(buf, at, n: int):  # n tokens per row from slot at i32[B]
    return jax.vmap(lambda b, s: lax.dynamic_slice(b, (s,), (n,)))(buf, at)


@dataclasses.dataclass(frozen=True)
class EasySpec(Drafter):
    """The configuration; `bind(cfg, mesh)` resolves it for one draft model (speculate does that)."""

    parallel: int = 4  # N, the layer-parallel size of the default partition
    head: int = 1  # leading sequential layers
    tail: int = 1  # trailing sequential layers
    groups: Groups | None = None  # an explicit partition instead of the default
    policy: str = ATTN_ONLY  # "attn_only" | "direct_mlp"
    calibration: str = cal.EVERY_ROUND
    scan_calibration: bool = False  # the exact pass as a lax.scan over stacked layers (else unrolled)
    max_fuzzy_rounds: int = 1  # every_mismatch: skipped rounds before a forced calibration
    cfg: ModelConfig | None = None
    mesh: Mesh | None = None  # the draft's placement (replicated); a `layer` axis > 1 runs groups sharded
    vocab: HotVocab | None = None  # a hot-vocabulary head (speculative/hot_vocab.py): drafts its V' tokens only

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"unknown EasySpec policy {self.policy!r}: one of {', '.join(POLICIES)}")
        if self.calibration not in cal.CALIBRATIONS:
            raise ValueError(f"unknown calibration {self.calibration!r}: one of {', '.join(cal.CALIBRATIONS)}")
        if self.max_fuzzy_rounds < 1:
            raise ValueError(f"max_fuzzy_rounds must be >= 1, got {self.max_fuzzy_rounds}")

    # ---- configuration -------------------------------------------------------------------------
    def bind(self, cfg: ModelConfig, mesh: Mesh | None = None, plan=None) -> "EasySpec":
        """Resolve the partition for `cfg` on `mesh` (None: the mesh given as EasySpec(mesh=...), if
        any; both given must agree). The draft is replicated over the mesh, not split by `plan`."""
        del plan
        if mesh is None:
            mesh = self.mesh
        elif self.mesh is not None and self.mesh != mesh:
            raise ValueError(
                f"EasySpec(mesh=...) has axes {dict(self.mesh.shape)} but it is bound to a draft on a mesh "
                f"with {dict(mesh.shape)}: give one mesh (load the draft on it, or pass it to EasySpec)"
            )
        L = cfg.num_layers
        groups = (
            check_groups(self.groups, L)
            if self.groups is not None
            else default_groups(L, self.parallel, self.head, self.tail)
        )
        if mesh is not None and mesh.shape.get(LAYER, 1) > 1:  # a layer axis of 1 (or none): the vmap path
            A = mesh.shape[LAYER]
            too_big = [list(g) for g in groups if len(g) > A]
            if self.groups is not None and too_big:  # a partition the user wrote is run as written, or refused
                raise ValueError(
                    f"EasySpec groups {too_big} are larger than the mesh's layer axis ({A} devices): one member "
                    f"per device; give groups of at most {A} layers, or a larger layer axis"
                )
            groups = split_groups(groups, A)  # the default partition (parallel=N) follows the mesh
        return dataclasses.replace(self, cfg=cfg, groups=groups, mesh=mesh)

    @property
    def bound(self) -> bool:
        return self.cfg is not None and self.groups is not None

    @property
    def bound_cfg(self) -> ModelConfig:
        if self.cfg is None or self.groups is None:
            raise ValueError("EasySpec is not bound to a draft model: call .bind(draft_cfg, mesh) first")
        return self.cfg

    @property
    def layer_mesh(self) -> Mesh | None:
        """The mesh the groups are sharded over, or None for the single-device (vmap) path."""
        return self.mesh if self.mesh is not None and self.mesh.shape.get(LAYER, 1) > 1 else None

    @property
    def fuzzy(self) -> bool:
        return any(len(g) > 1 for g in self.groups)

    @property
    def runs_calibration(self) -> bool:
        return self.fuzzy and self.calibration in (cal.EVERY_ROUND, cal.EVERY_MISMATCH)

    def describe(self) -> dict:
        return {
            "partition": [list(g) for g in self.groups],
            "partition_text": describe(self.groups),
            "policy": self.policy,
            "calibration": self.calibration,
            "calibration_impl": "scan" if self.scan_calibration else "unrolled",
            "path": f"shard_map over layer={self.layer_mesh.shape[LAYER]}" if self.layer_mesh else "vmap",
            "draft_vocab": self.vocab.describe() if self.vocab is not None else None,
        }

    # ---- the drafter seam ----------------------------------------------------------------------
    def prepare(self, params) -> dict:
        """Once, on the host side: the params the drafter runs on (stacked copies it needs: 162 MB for the
        0.5B at N = 4), placed replicated on the mesh. Already prepared params (a dict with "model" and
        "groups") come back as they are, so a caller that prepares once and passes the result to every
        `speculate` pays the stacking once."""
        self.bound_cfg
        if isinstance(params, dict) and "model" in params and "groups" in params:
            return params
        if self.vocab is not None:  # every draft logit (fuzzy and exact passes) from the trimmed head
            params = trim_head(params, self.cfg, self.vocab)
        prepared = {
            "model": params,
            "groups": stack_group_weights(params, self.groups)
            if self.layer_mesh is None
            else (None,) * len(self.groups),
            "layers": cal.stack_all_layers(params) if self.scan_calibration else None,
        }
        if self.mesh is not None:
            prepared = jax.device_put(prepared, NamedSharding(self.mesh, P()))
        return prepared

    def draft_costs(self, params, shape: TreeShape, *, context: int, max_len: int, repeats: int = 5) -> dict:
        """Measured seconds of a round's first and later draft forwards (the analytic speedup's inputs)."""
        from jaxspec.easyspec.costs import draft_costs

        return draft_costs(self, params, shape, context=context, max_len=max_len, repeats=repeats)

    def cache_slots(self, slots: int, shape: TreeShape) -> int:
        """Draft cache slots for a target cache of `slots`: room for the widest calibration block."""
        if not self.runs_calibration:
            return slots
        return slots + cal.exact_block_width(self.calibration, shape.depth, self.max_fuzzy_rounds)

    def _constrain(self, cache):
        if self.mesh is None:
            return cache
        return lax.with_sharding_constraint(cache, NamedSharding(self.mesh, P()))

    def _fuzzy(self, params, tokens, cache, positions, mask, logits_at=None, advance=None):
        return fuzzy_forward(
            params["model"],
            params["groups"],
            self.groups,
            tokens,
            cache,
            positions,
            mask,
            self.bound_cfg,
            self.policy,
            self.layer_mesh,
            logits_at=logits_at,
            advance=advance,
        )

    def init(
        self, params, target: Target, prompts: jax.Array, prompt_lens: jax.Array, *, max_len: int, method
    ) -> EasySpecState:
        del target
        cfg = self.bound_cfg
        B, Pw = prompts.shape
        cache = self._constrain(init_cache(cfg, B, max_len))
        if self.calibration == cal.NEVER and self.fuzzy:  # even the prompt goes through the groups
            pos = jnp.broadcast_to(jnp.arange(Pw, dtype=jnp.int32), (B, Pw))
            _, cache = self._fuzzy(
                params,
                prompts,
                cache,
                pos,
                causal_mask(cache.lengths, Pw, Pw),
                logits_at=(prompt_lens - 1)[:, None],
                advance=prompt_lens,
            )
            precise = jnp.zeros((B,), jnp.int32)
        else:
            _, cache = forward_prompt(params["model"], prompts, prompt_lens, cache, cfg)
            precise = prompt_lens
        history = jnp.zeros((B, max_len), jnp.int32).at[:, :Pw].set(prompts)
        return EasySpecState(
            self._constrain(cache),
            history,
            precise,
            prompt_lens,
            jnp.zeros((B,), bool),
            jnp.zeros((B,), jnp.int32),
            jnp.int32(1),
            jnp.int32(method.k_start),
        )

    def _exact_step1(self, params, st: EasySpecState, committed, width: int, rows=None):
        """Calibration fused with step 1: slots [precise, T) exactly, in a block `width` tokens wide. With
        `rows` bool[B], only those rows: the others' block goes to the stale slots from T on."""
        start = st.precise if rows is None else jnp.where(rows, st.precise, committed)
        tokens = _read(st.history, start, width)
        pos = start[:, None] + jnp.arange(width, dtype=jnp.int32)
        logits, cache = cal.exact_pass(
            params["model"],
            params["layers"],
            tokens,
            st.cache.replace(lengths=start),
            pos,
            jnp.maximum(committed - 1 - start, 0)[:, None],
            self.bound_cfg,
            self.scan_calibration,
        )
        return logits, cache, committed if rows is None else jnp.where(rows, committed, st.precise)

    def _mismatch_step1(self, params, st: EasySpecState, committed, width: int, depth: int):
        """every_mismatch: exact for every row, layer-parallel for every row, or (rows disagree) both —
        the layer-parallel step first, then the exact pass for the rows that calibrate."""
        advanced = committed > st.last_commit
        rows = cal.rows_to_calibrate(advanced, st.all_accepted, committed - st.precise, depth, width)

        def mixed(s):
            lf, cache, _ = self._fuzzy_step1(params, s, committed)
            le, cache, precise = self._exact_step1(params, dataclasses.replace(s, cache=cache), committed, width, rows)
            return jnp.where(rows[:, None, None], le, lf), cache, precise

        case = jnp.where(jnp.all(rows | ~advanced), 0, jnp.where(jnp.any(rows), 2, 1))
        return lax.switch(
            case,
            [
                lambda s: self._exact_step1(params, s, committed, width),
                lambda s: self._fuzzy_step1(params, s, committed),
                mixed,
            ],
            st,
        )

    def _fuzzy_step1(self, params, st: EasySpecState, committed):
        """Step 1 without calibration: the committed tokens that have no K/V yet (1 or 2), layer-parallel.
        Without groups everything is exact and this is DraftModel's step 1 to the bit: (prev, last)."""
        start = st.cached if self.fuzzy else committed - 2
        tokens = _read(st.history, start, 2)
        pos = start[:, None] + jnp.arange(2, dtype=jnp.int32)
        c = st.cache.replace(lengths=start)
        logits, cache = self._fuzzy(
            params, tokens, c, pos, causal_mask(start, 2, c.max_len), logits_at=(committed - 1 - start)[:, None]
        )
        return logits, cache, st.precise

    def propose(
        self, params, st: EasySpecState, target: Target, rnd: Round, key, *, method, sampling: SamplingConfig
    ) -> tuple[EasySpecState, Tree, KVCache]:
        shape, committed, steps = method.shape, rnd.committed, adaptive_steps(method, st.k)
        S = st.cache.max_len
        K = shape.width
        # `history` holds slot T-2 already (an accepted node, or the previous round's last): add `last`
        st = dataclasses.replace(st, history=_write(st.history, rnd.last[:, None], committed - 1))
        width = cal.exact_block_width(self.calibration, shape.depth, self.max_fuzzy_rounds)
        if not self.runs_calibration:
            logits, cache, precise = self._fuzzy_step1(params, st, committed)
        elif self.calibration == cal.EVERY_ROUND:
            logits, cache, precise = self._exact_step1(params, st, committed, width)
        else:
            logits, cache, precise = self._mismatch_step1(params, st, committed, width, shape.depth)
        cache = self._constrain(cache)

        step = depth_step(
            lambda t, c, pos, mask: self._fuzzy(params, t, c, pos, mask), committed, K, S, sampling, self._constrain
        )
        cache, tree = grow_tree(step, cache, draft_logprobs(logits[:, 0], sampling), key, shape, sampling, steps)
        st = dataclasses.replace(
            st,
            cache=cache.replace(lengths=committed),
            precise=precise,
            cached=committed,
            steps=jnp.asarray(steps, jnp.int32),
        )
        return st, tree, target.cache

    def commit(self, params, st: EasySpecState, out: Outcome, *, method) -> EasySpecState:
        """Keep the accepted path's K/V (depths 1..steps-1 were fed) next to the prefix, record its tokens."""
        del params
        shape, tree, n, path, committed = method.shape, out.tree, out.n, out.path, out.committed
        cache = st.cache
        if shape.width > 1 and shape.depth > 1:
            cache = self._constrain(cache.gather(committed[:, None] + path[:, : shape.depth - 1], committed))
        path_tokens = jnp.take_along_axis(tree.tokens, path, axis=1)  # [B, D]
        return dataclasses.replace(
            st,
            cache=cache,
            history=_write(st.history, path_tokens, committed),
            cached=committed + jnp.minimum(n, st.steps - 1),
            all_accepted=n >= st.steps,
            last_commit=committed,
            k=next_k(method, st.k, out),
        )
