"""DEL's cost model measured on the machine it runs on, instead of counted in layers.

The official TPL rule divides the expected tokens of a round by the layers it runs: L for the
verification, whatever its width, and ℓ per draft token (exit_stats.layer_costs). That is the cost on
hardware where a forward is bound by its weight reads and the LM head is cheap. On this 2-core CPU
neither holds (README "Results (DEL)", Costs): the head is 5–8 layers' worth, a 19-wide verification
with DEL's shadow rows costs 2.3–5 plain steps, and a draft at the deepest exit 0.97 of one — so a
round TPL scores as a win can be slower than plain decoding even when every draft is accepted.

`measure_round_cost` times the pieces a DEL round is made of, with the engine's own functions, at a
given cache size, in units of one plain decoding step (every piece timed once per round, interleaved,
fastest of `repeats` rounds kept):
    draft[i]   one draft forward (1 token) at candidate exit i, through DEL's exit dispatch (and the
               hot-vocabulary head when DEL has one: `vocab`)
    verify[d]  the verification of d drafts: the engine's block for d + 1 positions (its width bucket,
               verification.verify_widths) with the shadow rows of the candidate exits
and `RoundCost.matrix` turns them into TPL's denominator: cost[i, 0] = 1 (a plain step), cost[i, d] =
verify[d] + d·draft[i]. Exits that cannot beat plain decoding even at α = 1 under these costs
(exit_stats.can_pay) are dropped — DEL then neither probes nor seeds them (their shadow rows are most
of its overhead); when none is left, DEL is plain decoding at no cost.

    cost = measure_round_cost(params, cfg, exits=spread_exits(cfg.num_layers), max_len=512)
    speculate(target, None, prompts, method=chain(18), drafter=DEL(cost=cost))

`cached_round_cost` is what DEL's default (`cost="measured"`) calls: the measurement is kept on disk
(`$JAXSPEC_CACHE/round_cost/`, one JSON file per model shape, numerics, candidate exits, depth, cache
size, dispatch, device kind and count, CPU count and JAX version), so a machine pays it once per
configuration; delete the file (its path is logged) to measure again."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.cache import init_cache
from jaxspec.config import ModelConfig
from jaxspec.masks import causal_mask
from jaxspec.selfspec.dynamic_exit import exit_logits
from jaxspec.selfspec.exit_stats import can_pay
from jaxspec.speculative.hot_vocab import HotVocab, trim_head
from jaxspec.speculative.seam import HeadRows
from jaxspec.speculative.verification import chain_widths, verification_pass
from jaxspec.timing import best_times

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RoundCost:
    """A DEL round's cost in plain decoding steps, measured (hashable: a static option of `DEL`).
    `exits`: the candidate exits kept (those that can pay, see the module docstring), `draft[i]` the
    draft forward at exits[i], `verify[d]` (d = 0..depth; verify[0] = 1) the verification of d drafts
    with the kept exits' shadow rows; `measured`: every exit that was timed; `layers`, `max_len`,
    `step_ms`: the model depth, cache size and plain step they were measured with."""

    exits: tuple[int, ...]
    draft: tuple[float, ...]
    verify: tuple[float, ...]
    measured: tuple[int, ...]
    layers: int
    max_len: int
    step_ms: float

    def __post_init__(self):
        if len(self.draft) != len(self.exits):
            raise ValueError(f"{len(self.draft)} draft costs for {len(self.exits)} exits")
        if len(self.verify) < 2 or min(self.draft + self.verify, default=1.0) <= 0:
            raise ValueError("a round cost needs positive draft costs and verification costs for d = 0..depth >= 1")

    @property
    def depth(self) -> int:
        return len(self.verify) - 1

    def matrix(self, gamma_max: int) -> np.ndarray:
        """f32[m, gamma_max]: TPL's denominator for d = 0..gamma_max−1 drafts at each kept exit."""
        if gamma_max - 1 > self.depth:
            raise ValueError(
                f"the round costs were measured for up to {self.depth} drafts, the chain drafts up "
                f"to {gamma_max - 1}: measure them with depth >= {gamma_max - 1}"
            )
        d = np.arange(gamma_max, dtype=np.float64)[None]
        ver = np.asarray(self.verify[:gamma_max], np.float64)[None]
        cost = np.where(d == 0, 1.0, ver + d * np.asarray(self.draft, np.float64)[:, None])
        return cost.astype(np.float32).reshape(len(self.exits), gamma_max)

    def describe(self) -> dict:
        return {
            "exits": list(self.exits),
            "measured": list(self.measured),
            "draft": list(self.draft),
            "verify": list(self.verify),
            "max_len": self.max_len,
            "step_ms": self.step_ms,
        }


def _kept(exits, draft, verify) -> tuple[int, ...]:
    probe = RoundCost(tuple(exits), tuple(draft), tuple(verify), tuple(exits), 0, 0, 0.0)
    return tuple(e for e, ok in zip(exits, can_pay(probe.matrix(probe.depth + 1))) if ok)


def measure_round_cost(
    params,
    cfg: ModelConfig,
    exits: tuple[int, ...],
    *,
    depth: int = 18,
    max_len: int = 512,
    context: int | None = None,
    dispatch: str = "segments",
    repeats: int = 7,
    vocab: HotVocab | None = None,
) -> RoundCost:
    """Time a DEL round's pieces on this machine (batch 1, cache of `max_len` slots holding `context`
    tokens, default half) and keep the exits that can pay. Every piece is timed once per round over
    `repeats` rounds, the pieces interleaved, and its fastest time kept (timing.best_times): the costs are
    ratios to the plain step, and a slow spell that hit only the step's repeats once made every exit look
    cheap (README "Results (DEL)", run G). Verification is timed again, with the step, with the kept
    exits' shadow rows when the first pass (all exits' rows) dropped some. `vocab`: DEL's hot-vocabulary
    draft head — the draft forwards read it (the shadow rows are only masked to it: no cost)."""
    if not exits or list(exits) != sorted(set(exits)) or exits[0] < 1 or exits[-1] >= cfg.num_layers:
        raise ValueError(f"candidate exits must be increasing layer counts in 1..{cfg.num_layers - 1}, got {exits}")
    ctx = max_len // 2 if context is None else context
    if ctx + depth + 1 > max_len:
        raise ValueError(f"context {ctx} + a {depth + 1}-wide block does not fit a {max_len}-slot cache")
    cache = init_cache(cfg, 1, max_len).replace(lengths=jnp.asarray([ctx], jnp.int32))
    widths = [w for w in chain_widths(depth + 1) if w > 1]

    def verify_call(width: int, shadow: tuple[int, ...]) -> tuple:
        toks, pos = jnp.ones((1, width), jnp.int32), ctx + jnp.arange(width, dtype=jnp.int32)[None]
        f = jax.jit(functools.partial(verification_pass, cfg=cfg, rows=HeadRows(shadow, vocab) if shadow else None))
        return f, params, toks, cache, pos, causal_mask(cache.lengths, width, max_len)

    def verify_table(t: dict, step: float) -> list[float]:
        by_width = {w: t[w] / step for w in widths}
        return [1.0] + [by_width[min(w for w in widths if w >= d + 1)] for d in range(1, depth + 1)]

    toks, pos = jnp.ones((1, 1), jnp.int32), jnp.asarray([[ctx]], jnp.int32)
    draft_fn = jax.jit(
        lambda p, c, i: exit_logits(
            p, toks, c, pos, causal_mask(c.lengths, 1, max_len), cfg, tuple(exits), i, dispatch
        )[0]
    )
    calls = {"step": verify_call(1, ())}
    draft_params = params if vocab is None else trim_head(params, cfg, vocab)
    calls |= {("draft", i): (draft_fn, draft_params, cache, jnp.int32(i)) for i in range(len(exits))}
    calls |= {w: verify_call(w, tuple(exits)) for w in widths}
    t = best_times(calls, repeats)
    step = t["step"]
    draft = [t["draft", i] / step for i in range(len(exits))]
    verify = verify_table(t, step)
    kept = _kept(exits, draft, verify)
    if kept and kept != tuple(exits):  # fewer shadow rows: a cheaper verification for the exits kept
        t2 = best_times({"step": calls["step"]} | {w: verify_call(w, kept) for w in widths}, repeats)
        step2 = min(step, t2["step"])
        draft = [d * step / step2 for d in draft]
        step, verify = step2, verify_table(t2, step2)
    draft = [c for e, c in zip(exits, draft) if e in kept]
    return RoundCost(kept, tuple(draft), tuple(verify), tuple(exits), cfg.num_layers, max_len, 1e3 * step)


def cost_key(
    params,
    cfg: ModelConfig,
    exits: tuple[int, ...],
    *,
    depth: int,
    max_len: int,
    dispatch: str,
    vocab: HotVocab | None = None,
) -> dict:
    """Everything a measured round cost depends on (not the weights' values: the same shapes cost the same)."""
    leaves = jax.tree.leaves(params)
    dev = jax.devices()[0]
    sharding = getattr(leaves[0], "sharding", None) if leaves else None
    return {
        "version": 2,
        "cfg": repr(cfg),
        "param_dtypes": sorted({str(x.dtype) for x in leaves}),
        "exits": list(exits),
        "depth": depth,
        "max_len": max_len,
        "dispatch": dispatch,
        "platform": dev.platform,
        "device_kind": dev.device_kind,
        "devices": len(sharding.device_set) if sharding is not None else 1,
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
        **({"draft_vocab": vocab.digest} if vocab is not None else {}),
    }  # absent: the keys made before it


def cost_path(key: dict):
    """The cache file of a measurement: `$JAXSPEC_CACHE/round_cost/<sha256 of the key>.json`."""
    from jaxspec.paths import cache_dir

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "round_cost" / f"{digest}.json"


def _load(path, key: dict) -> RoundCost | None:
    """The cached cost, or None when there is none; a file that does not parse or answers another key
    is measured again (a cache, not data: logged, then overwritten)."""
    if not path.exists():
        return None
    try:
        rec = json.loads(path.read_text())
        if rec["key"] != key:
            raise ValueError("its key differs (a hash collision or an edited file)")
        c = rec["cost"]
        return RoundCost(
            tuple(c["exits"]),
            tuple(c["draft"]),
            tuple(c["verify"]),
            tuple(c["measured"]),
            int(c["layers"]),
            int(c["max_len"]),
            float(c["step_ms"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("DEL round cost cache %s is unreadable (%s): measuring again", path, e)
        return None


def cached_round_cost(
    params,
    cfg: ModelConfig,
    exits: tuple[int, ...],
    *,
    depth: int = 18,
    max_len: int = 512,
    dispatch: str = "segments",
    refresh: bool = False,
    vocab: HotVocab | None = None,
    measure: bool = True,
) -> RoundCost:
    """`measure_round_cost`, kept on disk per `cost_key` (module docstring): the first call on a machine
    measures (25–110 s for these models on a 2-core CPU) and writes the file atomically from process 0;
    later calls read it (logged). `refresh`: measure again and overwrite. `vocab`: DEL's hot-vocabulary
    head. `measure` False: read only — a cost not on disk is an error saying how to measure it (speculate
    never times the machine unless asked)."""
    key = cost_key(params, cfg, exits, depth=depth, max_len=max_len, dispatch=dispatch, vocab=vocab)
    path = cost_path(key)
    cost = None if refresh else _load(path, key)
    if cost is not None:
        log.info("DEL round cost read from %s", path)
        return cost
    if not (measure or refresh):
        raise ValueError(
            f"DEL's measured round cost for this model, machine and cache size is not in {path}: "
            "measure it explicitly (speculate / make_runner(..., measure_costs=True), the command "
            "line, or drafter.calibrate(params)) or use DEL(cost='layers')"
        )
    t0 = time.perf_counter()
    cost = measure_round_cost(params, cfg, exits, depth=depth, max_len=max_len, dispatch=dispatch, vocab=vocab)
    log.info("DEL round cost measured in %.0f s, kept in %s", time.perf_counter() - t0, path)
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(
            json.dumps(
                {"key": key, "cost": dataclasses.asdict(cost), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")},
                indent=1,
            )
        )
        os.replace(tmp, path)
    return cost
