"""`DEL`: self-speculation whose exit layer and draft length follow the context (Entezari Zarch et al.,
"DEL: Context-Aware Dynamic Exit Layer for Efficient Self-Speculative Decoding", COLM 2025).

    speculate(target, None, prompts, method=chain(18), drafter=DEL())

A round, on device (the engine's round with this drafter):
  draft    the first E layers (E among static candidate exits, dynamic_exit.py) + final norm + LM head
           draft a chain that stops after the first token whose probability is below τ (that token is
           kept), at most `depth` (18) tokens; K/V go into the target's one cache (layers < E);
  verify   the engine's pass over [last] + drafts; the candidate exits are its head rows (seam
           `head_rows`: `shadow_layers`), so it
           returns each exit's would-be token and probability at every verified position, their rows
           through the LM head in one call with the final layer's;
  commit   the shadow tokens vs the full model's greedy tokens update the decayed statistics over the
           valid columns, and the TPL rule picks the next (E, d*) and τ (exit_stats.py).
Before round 1 the statistics are seeded from the prompt's last `context` positions and the first
output position (the official round 1 drafts over 32), from the hidden states the target's prefill
computes anyway (seam `head_rows.prompt_width`: `prompt_shadows`): (context + 1) × (1 + m) LM-head rows.
Default 1 under a measured cost, 8 under the layer count — the head rows are dear on this CPU (on the 0.5B's short
answers 3 → 1 took DEL from 0.92× to 0.97× of vanilla), but a sparse start made the layer-count DEL
draft more where it loses (README "Results (DEL)", the context ablations).

The official code's quirks (spec del.md §4.4) and what `faithful=False` (the default) does instead:
  1. d* is not a cap: when TPL says plain decoding (d* = 0) the official code still drafts up to 18
     tokens at the argmax's exit (the smallest one: every exit ties at 1/L when d = 0). Fixed: d* = 0 is a
     plain decoding step (no drafts; the verification block has only `last`).
  2. τ is NaN while the exit has no matched or no mismatched observation: the official code then never
     stops drafting. Fixed: an empty class takes its extreme (matched 1, mismatched 0), exit_stats.threshold.
  3. No clipping when d* = 0: that round's statistics include columns after the first rejection. Fixed:
     always clipped (moot when d* = 0 drafts nothing).
`faithful=True` reproduces all three. Both seed from the prompt (the official round 1 drafts one token
at exit 1 to get there; output is the same, the seeded columns shift by one position).

Beyond the official code (`probe=1` turns it off, `faithful` implies it): while TPL prefers plain
decoding, the shadow rows (1 + m head rows instead of 1) and the statistics' update run only in probe
rounds, spaced 2, 4, … up to `probe` = 32 rounds while they keep choosing plain decoding, every round
once DEL drafts. Every d* = 0 round, probes included, is a plain decoding step in the engine (seam
`plain_next`); a probe observes only the `probe_exits` (2) exits TPL could pick next by an optimistic α
(exit_stats.probe_pick), 1 + 2 head rows; drafting rounds and the seeding observe all m.

The cost model (`cost`, round_cost.py): by default TPL's denominator is a round's cost in plain steps,
measured on this machine and kept on disk — the official layer count misprices drafts and wide blocks
on a CPU and drafts where it loses (README "Results (DEL)"); exits that cannot beat plain decoding are
dropped. `cost="layers"` (implied by `faithful` or a `head_cost`) is the official count.

Batches: one exit, d* and τ for the whole batch from statistics pooled over its live rows (the official
code has batch 1); acceptance and clipping stay per row. A batch row therefore need not equal its
single run in speed (its output is always the target's)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxspec.cache import KVCache
from jaxspec.config import ModelConfig
from jaxspec.params import head_in_layers
from jaxspec.sampling import SamplingConfig
from jaxspec.selfspec import exit_stats
from jaxspec.selfspec.chain import draft_chain
from jaxspec.selfspec.del_trace import DELTrace
from jaxspec.selfspec.dynamic_exit import DISPATCHES, exit_logits
from jaxspec.selfspec.exit_stats import ExitStats
from jaxspec.selfspec.layerskip import SelfDrafter
from jaxspec.selfspec.round_cost import RoundCost
from jaxspec.speculative.seam import CHAIN_ONLY, HeadRows, Outcome, Round, Target
from jaxspec.speculative.tree import Tree, init_tree


def spread_exits(num_layers: int, count: int = 8) -> tuple[int, ...]:
    """Up to `count` exits spread evenly over 1..L−1, the deepest (L−1) always among them."""
    top = num_layers - 1
    step = max(1.0, top / count)
    return tuple(sorted({max(1, round(top - i * step)) for i in range(count) if top - i * step >= 0.5}))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DELState:
    stats: ExitStats
    exit: jax.Array  # i32 index into the candidate exits for the next round
    gamma: jax.Array  # i32 the TPL's d* for the next round
    tau: jax.Array  # f32 the next round's confidence threshold at that exit
    rounds: jax.Array  # i32
    gap: jax.Array  # i32 rounds between the last two probes (doubles while they choose plain decoding)
    wait: jax.Array  # i32 plain rounds left before the next probe
    trace: DELTrace


@dataclasses.dataclass(frozen=True)
class DEL(SelfDrafter):
    """exits: candidate exits (layer counts, sorted, in 1..L−1), "spread" (default: up to 8 over the
    depth, the deepest included) or "all" (1..L−1, the official set; the shadow head then costs L−1 rows
    per position); omega: the statistics' decay; context: prompt positions seeding them (official 32; None: 8, or 1
    with a measured cost — `seed_context`); head_cost: the LM head's cost in layers in TPL's denominator
    under cost="layers" (0: the official count; "weights": params.head_in_layers);
    cost: TPL's denominator — None (default): "measured", or "layers" when faithful or a head_cost is
    given; "measured": a round's cost in plain steps, timed on the target's params when `speculate` /
    `make_runner` bind the drafter (cached on disk, round_cost.cached_round_cost); a `RoundCost`: given;
    "layers": the official layer count. With a measured cost the candidate exits are those that can beat
    plain decoding at all there; with none, DEL decodes plainly (no seeding, no probes);
    faithful: reproduce the official quirks (module docstring); dispatch: how the exit is chosen on
    device ("segments" or "switch", dynamic_exit.py); probe: while TPL chooses plain decoding, the
    statistics are gathered (and decayed) in probe rounds only, at most `probe` rounds apart (the gap
    doubles from 1 while the probes choose plain decoding), the others skipping the shadow
    rows (1: every round, as the official code and `faithful`); probe_exits: how many candidate exits
    a probe observes — those with the best optimistic TPL (exit_stats.probe_pick); 0: all of them (the
    official code, `faithful`). Drafting rounds and the seeding observe every exit. remeasure: with a
    measured cost, time it again and overwrite the kept file (after a driver update, say)."""

    exits: tuple[int, ...] | str = "spread"
    omega: float = 0.95
    context: int | None = None
    head_cost: float | str = 0.0
    cost: RoundCost | str | None = None
    faithful: bool = False
    dispatch: str = "segments"
    probe: int = 32
    probe_exits: int = 2
    remeasure: bool = False
    variable_depth = True
    shapes = CHAIN_ONLY
    shapes_why = "drafts a chain whose length its confidence threshold decides: use chain(cap) (cap 18 in the paper)"

    def check(self, cfg: ModelConfig) -> None:
        L = cfg.num_layers
        if isinstance(self.cost, str) and self.cost not in ("measured", "layers"):
            raise ValueError(
                f"cost {self.cost!r}: 'measured', 'layers' (the official count), a RoundCost or None "
                "(measured; layers when faithful or with a head_cost)"
            )
        if not (self.head_cost == "weights" or isinstance(self.head_cost, (int, float))):
            raise ValueError(f"head_cost {self.head_cost!r}: layers (a number) or 'weights'")
        if self.cost_model != "layers" and self.head_cost:
            raise ValueError("head_cost is part of a measured round cost: give one or the other")
        if self.remeasure and self.cost_model != "measured":
            raise ValueError(
                f"remeasure times a measured round cost again; this DEL's cost model is {self.cost_model!r}"
            )
        if isinstance(self.cost, RoundCost):
            if self.cost.layers != L:
                raise ValueError(
                    f"the round costs were measured on a {self.cost.layers}-layer model, the target has {L}"
                )
            if self.exits not in ("spread", self._resolve(cfg)):
                raise ValueError(
                    f"DEL(cost=...) takes its candidate exits from the measured costs "
                    f"({list(self.cost.exits)}): leave `exits` unset"
                )
        ex = self._resolve(cfg) if isinstance(self.cost, RoundCost) else self._given_exits(cfg)
        if not ex and not isinstance(self.cost, RoundCost):  # a measured cost may keep none: plain decoding
            raise ValueError("DEL needs at least one candidate exit layer")
        if list(ex) != sorted(set(ex)):
            raise ValueError(f"candidate exit layers must be strictly increasing, got {list(ex)}")
        if ex and (ex[0] < 1 or ex[-1] > L - 1):
            raise ValueError(f"candidate exit layers {list(ex)} are outside 1..{L - 1} (the target has {L} layers)")
        if not 0 < self.omega <= 1:
            raise ValueError(f"omega (the statistics' decay) must be in (0, 1], got {self.omega}")
        if self.seed_context < 0 or (self.head_cost != "weights" and self.head_cost < 0):
            raise ValueError(f"context and head_cost must be >= 0, got {self.context}, {self.head_cost}")
        if self.probe_exits < 0:
            raise ValueError(f"probe_exits (exits a probe observes; 0: all) must be >= 0, got {self.probe_exits}")
        if self.probe < 1:
            raise ValueError(f"probe (rounds between statistics while decoding plainly) must be >= 1, got {self.probe}")
        if self.dispatch not in DISPATCHES:
            raise ValueError(f"unknown exit dispatch {self.dispatch!r}: one of {DISPATCHES}")

    def _given_exits(self, cfg: ModelConfig) -> tuple[int, ...]:
        """The `exits` option as layer counts."""
        if self.exits == "spread":
            return spread_exits(cfg.num_layers)
        if self.exits == "all":
            return tuple(range(1, cfg.num_layers))
        if isinstance(self.exits, str):
            raise ValueError(f"candidate exits {self.exits!r}: a tuple of layer counts, 'spread' or 'all'")
        return tuple(int(e) for e in self.exits)

    def _resolve(self, cfg: ModelConfig) -> tuple[int, ...]:
        """The candidate exits: the given ones, or with a measured cost those of its exits that can pay."""
        if self.cost_model == "measured":
            raise ValueError(
                "DEL's measured cost model (the default) is timed on the target's params: pass the "
                "drafter to speculate / make_runner (they measure it or read it from the disk cache), "
                "call .calibrate(params) on the bound drafter, or use DEL(cost='layers')"
            )
        if isinstance(self.cost, RoundCost):
            return tuple(e for e, ok in zip(self.cost.exits, self._pays()) if ok)
        return self._given_exits(cfg)

    def bind(self, cfg: ModelConfig, mesh=None, plan=None) -> "DEL":
        bound = super().bind(cfg, mesh, plan)
        exits = self._given_exits(cfg) if self.cost_model == "measured" else self._resolve(cfg)
        return dataclasses.replace(bound, exits=exits)

    def calibrate(
        self, params, *, max_len: int = 512, depth: int = 18, measure: bool = True, refresh: bool = False
    ) -> "DEL":
        """With a measured cost (bound): the round cost on `params` over the candidate exits, from the
        disk cache or timed (round_cost.cached_round_cost; `measure` False: from the cache only; `refresh`:
        timed again); otherwise self."""
        if self.cost_model != "measured":
            return self
        from jaxspec.selfspec.round_cost import cached_round_cost

        cost = cached_round_cost(
            params,
            self.bound_cfg,
            self.exits,
            depth=depth,
            max_len=max_len,
            dispatch=self.dispatch,
            refresh=refresh or self.remeasure,
            vocab=self.vocab,
            measure=measure,
        )
        return dataclasses.replace(self, cost=cost, exits=self._resolve_with(cost), remeasure=False)

    @property
    def cost_model(self) -> RoundCost | str:
        """The cost model in effect: `cost`, or by default (None) "measured" — "layers" (the official
        count) when `faithful` or a `head_cost` is given."""
        if self.cost is None:
            return "layers" if self.faithful or self.head_cost else "measured"
        return self.cost

    def _resolve_with(self, cost: RoundCost) -> tuple[int, ...]:
        return dataclasses.replace(self, cost=cost)._resolve(self.bound_cfg)

    def _pays(self) -> np.ndarray:
        return exit_stats.can_pay(self.cost.matrix(self.cost.depth + 1))

    def _cost_table(self, gamma_max: int) -> np.ndarray:
        """TPL's denominator f32[m, gamma_max] over the candidate exits."""
        if self.cost_model == "layers":
            return exit_stats.layer_costs(self.shadow_layers, self.bound_cfg.num_layers, gamma_max, self.tpl_head_cost)
        return self.cost.matrix(gamma_max)[self._pays()]

    @property
    def shadow_layers(self) -> tuple[int, ...]:
        return self._resolve(self.bound_cfg)

    @property
    def tpl_head_cost(self) -> float:
        """The LM head in layers in the layer-count denominator: `head_cost`, or with "weights" the
        head's weights over a layer's (what a step bound by its weight reads pays; module docstring)."""
        return head_in_layers(self.bound_cfg) if self.head_cost == "weights" else float(self.head_cost)

    @property
    def seed_context(self) -> int:
        """Prompt positions (before the last) that seed the statistics: `context`, or by default 8 under
        the layer count and 1 under a measured cost (module docstring)."""
        if self.context is not None:
            return self.context
        return 8 if self.cost_model == "layers" else 1

    @property
    def plain_only(self) -> bool:
        """No exit can pay under the measured costs: every round is a plain decoding step."""
        return not self.shadow_layers

    def describe(self) -> dict:
        return {
            "exits": list(self.shadow_layers),
            "layers": self.bound_cfg.num_layers,
            "omega": self.omega,
            "context": self.seed_context,
            "head_cost": None if self.cost_model != "layers" else round(self.tpl_head_cost, 3),
            "faithful": self.faithful,
            "cost": self.cost.describe() if isinstance(self.cost, RoundCost) else self.cost_model,
            "dispatch": self.dispatch,
            "probe": 1 if self.faithful else self.probe,
            "probe_exits": self._picks or len(self.shadow_layers),
            **self.vocab_describe(),
        }

    def report(self, st: DELState) -> dict:
        """The per-round traces up to the last round (pooled over the batch: one exit per batch)."""
        alpha = exit_stats.acceptance(st.stats)
        return {
            **st.trace.report(st.rounds),
            "final_alpha": dict(zip(map(str, self.shadow_layers), map(float, alpha))) if alpha.size else {},
        }

    def _shallow(self, params, tokens, cache, positions, mask, exit_state):
        return exit_logits(
            params, tokens, cache, positions, mask, self.bound_cfg, self.shadow_layers, exit_state, self.dispatch
        )

    def decide(self, stats: ExitStats, depth: int):
        """The TPL rule on `stats` for chains of at most `depth`: (exit index, d*, τ) — traced; what `init`
        and `commit` set, and what experiments/selfspec/del_costs.py times."""
        if self.plain_only:
            return jnp.int32(0), jnp.int32(0), jnp.float32(jnp.nan)
        idx, gamma = exit_stats.choose(stats, self._cost_table(depth))
        return idx, gamma, exit_stats.threshold(stats, idx, self.faithful).astype(jnp.float32)

    @property
    def prompt_shadows(self) -> int:
        """The prompt positions the target's prefill computes shadow tokens over: the last `context` and
        the one that gives token 1 (none when no exit can pay)."""
        return 0 if self.plain_only else self.seed_context + 1

    @property
    def head_rows(self) -> HeadRows | None:
        """The shadow tokens, as the seam's extra head rows: every candidate exit's row through the LM head
        with the verification's (restricted to the draft head's hot vocabulary: what it would draft) and
        over the prompt's end; none when no exit can pay."""
        if self.plain_only:
            return None
        return HeadRows(self.shadow_layers, self.vocab, self.prompt_shadows)

    def init(self, params, target: Target, prompts, prompt_lens, *, max_len: int, method) -> DELState:
        del params, prompts, prompt_lens
        if isinstance(self.cost, RoundCost) and method.shape.depth > self.cost.depth + 1:
            raise ValueError(
                f"the round costs cover chains of up to {self.cost.depth + 1} drafts, the method drafts "
                f"{method.shape.depth}: measure them with depth >= {method.shape.depth - 1}"
            )
        stats = ExitStats.zeros(len(self.shadow_layers))
        ps = target.prompt_rows  # from the prefill's own hidden states (verification.prompt_pass)
        if ps is not None:
            stats = exit_stats.update(stats, ps.tokens == ps.greedy[..., None], ps.conf, ps.real, self.omega)
        idx, gamma, tau = self.decide(stats, method.shape.depth)
        trace = DELTrace.empty(max_len)  # a round emits >= 1 token per live row: never more rounds than slots
        gap, wait = self._next_probe(gamma, jnp.int32(1))  # the seeding counts as a probe
        if self.plain_only:  # never a probe: the engine decodes plainly to the end
            gap, wait = jnp.int32(0), jnp.int32(2**30)
        return DELState(stats, idx, gamma, tau, jnp.int32(0), gap, wait, trace)

    def _next_probe(self, gamma, gap):
        """After a probe whose decision is `gamma`: (gap, plain rounds before the next probe) — doubling
        the gap while plain decoding wins, back to every round once DEL drafts."""
        gap = jnp.where(gamma > 0, 1, jnp.minimum(2 * gap, self.probe)).astype(jnp.int32)
        return gap, jnp.where(gamma > 0, 0, gap - 1).astype(jnp.int32)

    def propose(
        self, params, st: DELState, target: Target, rnd: Round, key, *, method, sampling: SamplingConfig
    ) -> tuple[DELState, Tree, KVCache]:
        B, shape = rnd.last.shape[0], method.shape
        tau = jnp.where(jnp.isnan(st.tau), 0.0, st.tau)  # NaN (faithful): `conf < τ` never holds
        thr = jnp.broadcast_to(tau, (B,))

        def draft(_):
            lq_root, c = self._root(params, target, rnd, sampling, st.exit)
            step = self._step(params, target, rnd, 1, sampling, st.exit)
            c, t = draft_chain(
                lambda c, tok, d: step(c, tok, None, d), c, lq_root, key, shape, sampling, jnp.int32(shape.depth), thr
            )
            return t, c.replace(lengths=target.cache.lengths)

        def plain(_):  # d* = 0: no drafts, the round is one decoding step
            vocab = None if sampling.greedy else self.bound_cfg.vocab_size
            return init_tree(B, shape, vocab), target.cache

        if self.plain_only:
            return st, *plain(None)
        t, c = draft(None) if self.faithful else lax.cond(st.gamma > 0, draft, plain, None)
        return st, t, c

    def head_rows_now(self, st: DELState) -> jax.Array | None:
        """Every drafting round; while decoding plainly (d* = 0) the probe rounds only. A plain step
        with shadow rows costs the LM head over 1 + m rows instead of 1 — on a compute-bound head (this
        CPU, a large vocabulary) that is most of DEL's overhead, and while TPL prefers plain decoding
        the statistics only have to notice when that changes."""
        if self.faithful or self.probe == 1:
            return None
        return (st.gamma > 0) | (st.wait == 0)

    def plain_next(self, st: DELState) -> jax.Array | None:
        """While TPL prefers plain decoding (d* = 0) the next round drafts nothing: the engine runs it as
        a plain decoding step (seam.Drafter.plain_next) — the probes among them too (a plain step whose
        shadow rows go through the head, then `commit`), so a probe costs a plain step plus those rows."""
        if self.plain_only:
            return jnp.bool_(True)
        if self.faithful:  # the official code drafts even when d* = 0
            return None
        return st.gamma == 0

    @property
    def _picks(self) -> int:
        """Exits a probe observes (0: all): `probe_exits` when fewer than the candidates."""
        k = self.probe_exits
        return 0 if self.faithful or not 0 < k < len(self.shadow_layers) else k

    def head_rows_pick(self, st: DELState, *, method) -> jax.Array | None:
        """The exits a probe (a plain step with shadow rows) observes: the `probe_exits` with the best
        optimistic TPL (exit_stats.probe_pick) — each observed exit costs a row of the LM head, the
        largest part of a probe. Drafting rounds observe every exit."""
        if not self._picks:
            return None
        return exit_stats.probe_pick(st.stats, self._cost_table(method.shape.depth), self._picks)

    def skip(self, st: DELState, rounds: jax.Array) -> DELState:
        """`rounds` plain steps recorded as `commit` records a plain round without statistics."""
        trace = st.trace.plain_rounds(st.rounds, rounds, st.gamma, st.tau)
        return dataclasses.replace(st, rounds=st.rounds + rounds, wait=st.wait - rounds, trace=trace)

    def commit(self, params, st: DELState, out: Outcome, *, method) -> DELState:
        del params
        if self.plain_only:  # a full round only in the streaming mode: nothing to learn
            return self.skip(st, jnp.int32(1))
        y = jnp.argmax(out.logits, axis=-1)  # the full model's greedy tokens (also when sampling, as official)
        match = out.head_tokens == y[..., None]  # [B, 1 + N, m]
        t = jnp.arange(match.shape[1])[None]
        real = (t <= out.drafted[:, None]) & out.live[:, None]  # [last] + the drafted depths
        at_exit = jnp.take(match, st.exit, axis=2)
        valid = exit_stats.valid_columns(at_exit, real, (st.gamma > 0) if self.faithful else True)
        pick = self.head_rows_pick(st, method=method)
        if pick is not None:  # a plain round's probe observes the picked exits only (a full round: all)
            seen = jnp.zeros(match.shape[2], bool).at[pick].set(True) | (st.gamma > 0)
            valid = valid[..., None] & seen
        stats = exit_stats.update(st.stats, match, out.head_conf, valid, self.omega)
        idx, gamma, tau = self.decide(stats, method.shape.depth)
        seen = self.head_rows_now(st)
        gap, wait = self._next_probe(gamma, st.gap)
        if seen is not None:  # a round without shadow rows leaves the statistics and decisions as they were
            keep = lambda new, old: jnp.where(seen, new, old)  # noqa: E731
            stats = jax.tree.map(keep, stats, st.stats)
            idx, gamma, tau = keep(idx, st.exit), keep(gamma, st.gamma), keep(tau, st.tau)
            gap, wait = keep(gap, st.gap), keep(wait, st.wait - 1)

        live = out.live.astype(jnp.float32)
        mean = lambda x: jnp.sum(x * live) / jnp.maximum(jnp.sum(live), 1)  # noqa: E731
        plain_step = (st.gamma == 0) & (not self.faithful)
        layer = jnp.where(plain_step, 0, jnp.asarray(self.shadow_layers, jnp.int32)[st.exit])
        r = st.rounds
        trace = st.trace.record(r, layer, st.gamma, st.tau, mean(out.drafted), mean(out.n))
        return DELState(stats, idx, gamma, tau, r + 1, gap, wait, trace)
