"""`Cascade`: prompt lookup in front of a draft model (issue 16 §1) — n-gram drafts where the text
repeats itself, the draft model's where it does not.

    speculate(target, draft, prompts, method=chain(4), drafter=Cascade(NGram(3, 1), min_match=2))
    speculate(target, draft, prompts, method=chain(6), drafter=Cascade(NGram(3, 1), extend=True))
    speculate(target, None, prompts, method=chain(4), drafter=Cascade(fallback=LayerSkip(24)))  # no draft model

switch (the default): a row whose lookup proposes at least `min_match` tokens drafts them (NGram's
chain); the other rows draft with the model (`DraftModel`'s chain). `min_match` counts proposed tokens;
the length of the matched n-gram is gated by the lookup itself: `Cascade(NGram(3, 2))` takes the lookup
only where at least 2 tokens matched, the model everywhere else. A round in which every row has a
match runs no model step at all. The model's cache then lags behind the tokens those rounds committed,
so before the model drafts again it is caught up from the token history (NGram's state holds it):
`catchup` tokens per forward, in an on-device loop of as many passes as the lag needs. On memory-bound
hardware a pass costs about one draft step (the weights are streamed once per pass) — less than the
k draft steps each skipped round saved.

Behind the lookup a self-drafter may stand instead (LayerSkip, FSM, DraftVerify: the target's first E
layers, in the target's own cache — switch mode only). It needs no catch-up: it drafts from the target's
cache, which verification keeps exact whoever drafted. It learns (FSM's γ, DraftVerify's threshold) only
from the rounds it drafted. DEL is refused: it learns from every verification's shadow tokens and plain
steps, which a lookup round would have to hand it.

extend: every round the model continues the row's n-gram proposal of c tokens (c = 0: plain drafting).
It reads (prev, last) and the proposal in one block — which also writes those tokens' K/V, so its cache
never lags — and drafts the remaining k − c depths one step each: c fewer model steps than drafting
from scratch, at the price of one block wider than the model's usual two tokens.

Lossless either way: a proposal is a chain whose n-gram nodes have the point-mass q (ngram.chain_tree)
and whose model nodes have the model's q given the actual prefix, so the engine's acceptance — greedy
or sampling — is exact for it. Chains only (k fixed; an n-gram proposal is one continuation).

The draft model's K/V invariant, per row: slots [0, `fed`) are exact. DraftModel.propose needs
fed ≥ T − 2 (it writes prev, last at T − 2, T − 1); after a model round that accepted n of its own
nodes, fed = T + min(n, k − 1) (depths 1..k − 1 were fed at T..T + k − 2); a row that took the n-gram
chain while the model ran anyway keeps fed = T (the model's drafts there are not the committed ones)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from jaxspec.config import ModelConfig
from jaxspec.masks import causal_mask
from jaxspec.model import embed, forward, run_layers
from jaxspec.sampling import SamplingConfig
from jaxspec.sharding import constrain_cache
from jaxspec.speculative.drafters import DraftModel, DraftModelState
from jaxspec.speculative.ngram import NGram, NGramState, lookup
from jaxspec.speculative.seam import CHAIN_ONLY, Drafter, Outcome, Round, Target
from jaxspec.speculative.tree import Tree, chain_tree, draft_logprobs


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CascadeState:
    ngram: NGramState  # the token history (prompt, then output)
    model: DraftModelState  # the draft model's cache, prev, k
    fed: jax.Array  # i32[B] the draft cache's exact slots are [0, fed) (switch; extend keeps it exact)
    took_ngram: jax.Array  # bool[B] this round's chain is the n-gram's (read by commit)
    model_ran: jax.Array  # bool[] the model drafted this round
    ngram_rounds: jax.Array  # i32[B] rounds served by the lookup alone (extend: with a proposal to extend)
    model_rounds: jax.Array  # i32[B] rounds served by the model (extend: drafted from scratch)
    ngram_tokens: jax.Array  # i32[B] n-gram tokens offered
    model_passes: jax.Array  # i32[] rounds in which the model ran (for any row)
    catchup_passes: jax.Array  # i32[] catch-up forwards (switch)


def _chain_logq(lq: jax.Array, at: jax.Array, logq: jax.Array) -> jax.Array:
    """logq f32[B, D, V] with row `at` i32[B] set to lq f32[B, V] (rows at >= D: unchanged)."""
    D = logq.shape[1]
    hit = (jnp.arange(D)[None] == at[:, None])[..., None]
    return jnp.where(hit, lq[:, None], logq)


@dataclasses.dataclass(frozen=True)
class Cascade(Drafter):
    """`ngram` (prompt lookup) in front of `fallback` (a `DraftModel`, bound to the draft model by
    `speculate` / `make_runner`) or a self-drafter (the target's first layers; switch only): switch at
    `min_match` proposed tokens, or `extend` the proposal with the model; `catchup`: tokens per catch-up
    forward of the model's cache (switch; 0: k + 2)."""

    MIN_MATCH = 3  # min_match's default, measured (docs/lookup.md); the registry's is min(MIN_MATCH, k)
    ngram: NGram = NGram()
    fallback: Drafter = DraftModel()
    min_match: int = MIN_MATCH
    extend: bool = False
    catchup: int = 0
    variable_depth = True  # an n-gram round proposes as many tokens as its match has
    shapes = CHAIN_ONLY

    def __post_init__(self):
        if not isinstance(self.ngram, NGram):
            raise ValueError(f"Cascade's first stage is an NGram (prompt lookup), got {type(self.ngram).__name__}")
        fb = self.fallback
        if not isinstance(fb, DraftModel) and not (fb.writes_target_cache and not fb.needs_draft_model):
            raise ValueError(
                f"Cascade's fallback is a draft model (DraftModel) or a self-drafter (LayerSkip, FSM, "
                f"DraftVerify), got {type(fb).__name__}"
            )
        if self.self_fallback and (
            # seam members that make a drafter learn from every round (DEL: head rows and plain steps;
            # declared on the class: an unbound DEL has no layers to look at yet)
            type(fb).plain_next is not Drafter.plain_next
            or type(fb).head_rows is not Drafter.head_rows
            or fb.hidden_layers
        ):
            raise ValueError(
                f"{type(fb).__name__} behind the lookup is not supported: it learns from every round's "
                f"head rows and plain steps, which lookup rounds would have to hand it (use a "
                f"static self-drafter: LayerSkip, FSM, DraftVerify)"
            )
        if self.self_fallback and self.extend:
            raise ValueError(
                "Cascade's extend mode continues a lookup proposal in the draft model's own cache: it "
                "needs a draft model (DraftModel), not a self-drafter"
            )
        if not isinstance(self.min_match, int) or self.min_match < 1:
            raise ValueError(
                f"min_match must be an integer >= 1 (n-gram tokens that make a round the lookup's), "
                f"got {self.min_match!r}"
            )
        if self.catchup < 0:
            raise ValueError(f"catchup must be >= 0 tokens per catch-up forward (0: k + 2), got {self.catchup}")

    @property
    def self_fallback(self) -> bool:
        """The fallback drafts with the target's own layers (no draft model, no cache of its own)."""
        return not isinstance(self.fallback, DraftModel)

    @property
    def writes_target_cache(self) -> bool:
        return self.fallback.writes_target_cache

    @property
    def needs_draft_model(self) -> bool:
        return self.fallback.needs_draft_model

    @property
    def cfg(self) -> ModelConfig | None:
        return self.fallback.cfg

    @property
    def vocab(self):
        return self.fallback.vocab

    @property
    def bound(self) -> bool:
        return self.ngram.bound and self.fallback.bound

    def check_head(self, target_params) -> None:
        self.fallback.check_head(target_params)  # a self-drafter's exit reads the target's head

    def bind(self, cfg: ModelConfig, mesh=None, plan=None) -> "Cascade":
        return dataclasses.replace(self, ngram=self.ngram.bind(cfg), fallback=self.fallback.bind(cfg, mesh, plan=plan))

    def prepare(self, params):
        return self.prepare_for(params, None)

    def prepare_for(self, params, target_params):
        if params is None and not self.self_fallback:
            raise ValueError("Cascade falls back on a draft model: give one (draft=...)")
        return self.fallback.prepare_for(params, target_params)

    def describe(self) -> dict:
        return {
            "mode": "extend" if self.extend else "switch",
            "max_ngram": self.ngram.max_ngram,
            "min_ngram": self.ngram.min_ngram,
            "min_match": self.min_match,
            "catchup": self.catchup,
            **self.fallback.describe(),
        }

    def _width(self, depth: int) -> int:
        return self.catchup or depth + 2

    def cache_slots(self, slots: int, shape) -> int:
        if self.self_fallback:  # no cache of its own
            return self.fallback.cache_slots(slots, shape)
        # a catch-up pass or a row that finished its chain writes past the round's block: room for it
        return self.fallback.cache_slots(slots, shape) + self._width(shape.depth) + shape.depth

    def check_method(self, method) -> None:
        super().check_method(method)
        if not self.extend and self.min_match > method.shape.depth:  # extend mode continues any proposal
            raise ValueError(
                f"min_match ({self.min_match}) exceeds the chain's k ({method.shape.depth}): the "
                f"lookup could never serve a round (pass min_match <= k, --min-match on the command line)"
            )

    def init(self, params, target: Target, prompts, prompt_lens, *, max_len: int, method) -> CascadeState:
        B = prompts.shape[0]
        zeros = jnp.zeros((B,), jnp.int32)
        return CascadeState(
            self.ngram.init(None, target, prompts, prompt_lens, max_len=max_len, method=method),
            self.fallback.init(params, target, prompts, prompt_lens, max_len=max_len, method=method),
            prompt_lens.astype(jnp.int32),
            jnp.zeros((B,), bool),
            jnp.bool_(False),
            zeros,
            zeros,
            zeros,
            jnp.int32(0),
            jnp.int32(0),
        )

    def propose(
        self, params, st: CascadeState, target: Target, rnd: Round, key, *, method, sampling: SamplingConfig
    ) -> tuple[CascadeState, Tree, object]:
        D, V = method.shape.depth, self.cfg.vocab_size
        rows = jnp.arange(rnd.committed.shape[0])
        history = st.ngram.history.at[rows, rnd.committed - 1].set(rnd.last, mode="drop")  # the newest token
        tokens, count = lookup(history, rnd.committed, self.ngram.max_ngram, self.ngram.min_ngram, D)
        st = dataclasses.replace(
            st, ngram=NGramState(history), ngram_tokens=st.ngram_tokens + jnp.where(rnd.live, count, 0)
        )
        if self.extend:
            st, tree = self._extend(params, st, rnd, key, tokens, count, D, sampling)
            return st, tree, target.cache
        took = count >= self.min_match
        ngram_tree = chain_tree(tokens, jnp.where(took, count, 0), sampling, V)

        def with_model(st: CascadeState):
            if self.self_fallback:  # it drafts from the target's cache, exact whoever drafted before
                model, passes = st.model, jnp.int32(0)
            else:
                model, passes = self._catch_up(params, st, rnd, D)
            model, tree, cache = self.fallback.propose(
                params, model, target, rnd, key, method=method, sampling=sampling
            )
            pick = lambda a, b: jnp.where(took.reshape(took.shape + (1,) * (a.ndim - 1)), a, b)  # noqa: E731
            return (
                dataclasses.replace(
                    st,
                    model=model,
                    fed=jnp.where(rnd.live, rnd.committed, st.fed),
                    model_passes=st.model_passes + 1,
                    catchup_passes=st.catchup_passes + passes,
                ),
                jax.tree.map(pick, ngram_tree, tree),
                jnp.bool_(True),
                cache if self.self_fallback else target.cache,
            )

        def lookup_only(st: CascadeState):
            return st, ngram_tree, jnp.bool_(False), target.cache

        st, tree, ran, cache = lax.cond(jnp.any(rnd.live & ~took), with_model, lookup_only, st)
        live = rnd.live.astype(jnp.int32)
        st = dataclasses.replace(
            st,
            took_ngram=took,
            model_ran=ran,
            ngram_rounds=st.ngram_rounds + live * took,
            model_rounds=st.model_rounds + live * ~took,
        )
        return st, tree, cache

    def _catch_up(self, params, st: CascadeState, rnd: Round, depth: int) -> tuple[DraftModelState, jax.Array]:
        """Feed the history's tokens at slots [fed, T − 2) to the draft model, `catchup` per forward,
        until every live row's cache is exact below T − 2 (no LM head: only the K/V are wanted)."""
        cfg, W = self.cfg, self._width(depth)
        history, S = st.ngram.history, st.ngram.history.shape[1]
        need = rnd.committed - 2

        def lagging(c):
            fed, _, _ = c
            return jnp.any(rnd.live & (fed < need))

        def feed(c):  # rows already caught up re-write exact entries at T - 2 (and stale ones beyond)
            fed, cache, passes = c
            s = jnp.minimum(fed, need)
            pos = s[:, None] + jnp.arange(W, dtype=jnp.int32)
            x = embed(params, jnp.take_along_axis(history, jnp.clip(pos, 0, S - 1), axis=1), cfg)
            _, cache, _ = run_layers(params, x, cache.replace(lengths=s), pos, causal_mask(s, W, cache.max_len), cfg)
            return jnp.minimum(s + W, jnp.maximum(need, fed)), constrain_cache(cache, self.fallback.plan), passes + 1

        fed, cache, passes = lax.while_loop(lagging, feed, (st.fed, st.model.cache, jnp.int32(0)))
        del fed  # propose re-reads T − 2 onwards itself
        return dataclasses.replace(st.model, cache=cache), passes

    def _extend(self, params, st: CascadeState, rnd: Round, key, prefix, c, D: int, sampling: SamplingConfig):
        """The model reads [prev, last, prefix] at slots T − 2.. in one block and drafts depths c + 1..D
        one step each; rows with more prefix wait (re-writing the never-fed depth-D slot)."""
        cfg, plan, T = self.cfg, self.fallback.plan, rnd.committed
        B = T.shape[0]
        m = st.model
        block = jnp.concatenate([m.prev[:, None], rnd.last[:, None], prefix[:, : D - 1]], axis=1)  # [B, D + 1]
        logits, cache, _ = forward(
            params, block, m.cache.replace(lengths=T - 2), cfg, logits_at=jnp.minimum(c + 1, D)[:, None]
        )  # after `last` or the c-th token
        cache = constrain_cache(cache, plan)
        sampled = not sampling.greedy
        logq = None
        if sampled:  # the prefix's point masses; the model's rows are filled in as it draws
            logq = jnp.where(jnp.arange(cfg.vocab_size)[None, None] == prefix[..., None], 0.0, -jnp.inf)
            logq = logq.astype(jnp.float32)

        def draw(j, lq, tokens, logq):  # row b draws depth c_b + j + 1 (index c_b + j) from lq f32[B, V]
            tok = (
                jax.random.categorical(jax.random.fold_in(key, j), lq, axis=-1) if sampled else jnp.argmax(lq, axis=-1)
            ).astype(jnp.int32)
            at = c + j
            tokens = jnp.where(jnp.arange(D)[None] == at[:, None], tok[:, None], tokens)
            return tok, tokens, None if logq is None else _chain_logq(lq, at, logq)

        tok, tokens, logq = draw(0, draft_logprobs(logits[:, 0], sampling), prefix, logq)
        steps = D - jnp.min(jnp.where(rnd.live, c, D))  # draws the longest-drafting live row needs

        def body(carry):
            j, tok, tokens, logq, cache = carry
            slot = jnp.minimum(T + c + j - 1, T + D - 1)  # depth c + j's node; done rows: the depth-D slot
            lg, cache, _ = forward(params, tok[:, None], cache.replace(lengths=slot), cfg, positions=slot[:, None])
            tok, tokens, logq = draw(j, draft_logprobs(lg[:, 0], sampling), tokens, logq)
            return j + 1, tok, tokens, logq, constrain_cache(cache, plan)

        _, _, tokens, logq, cache = lax.while_loop(
            lambda a: a[0] < steps, body, (jnp.int32(1), tok, tokens, logq, cache)
        )
        tree = chain_tree(tokens, jnp.full((B,), D, jnp.int32), sampling, cfg.vocab_size, logq=logq)
        live = rnd.live.astype(jnp.int32)
        has = c > 0
        st = dataclasses.replace(
            st,
            model=dataclasses.replace(m, cache=cache.replace(lengths=T)),
            took_ngram=jnp.zeros_like(has),
            model_ran=jnp.bool_(True),
            ngram_rounds=st.ngram_rounds + live * has,
            model_rounds=st.model_rounds + live * ~has,
            model_passes=st.model_passes + 1,
        )
        return st, tree

    def commit(self, params, st: CascadeState, out: Outcome, *, method) -> CascadeState:
        """The accepted tokens join the history; the model learns the token before `extra`; `fed` follows
        the invariant in the module docstring."""
        D = method.shape.depth
        ngram = self.ngram.commit(None, st.ngram, out, method=method)
        own = out.live & st.model_ran & ~st.took_ngram  # the accepted nodes are the model's own
        # a self-drafter adapts (FSM's γ, DV's threshold) only to the rounds it drafted: to it a row the
        # lookup served looks finished (not live); DraftModel learns every row's `prev`
        model = self.fallback.commit(
            params, st.model, dataclasses.replace(out, live=own) if self.self_fallback else out, method=method
        )
        fed = jnp.where(own, out.committed + jnp.minimum(out.n, D - 1), st.fed)
        return dataclasses.replace(st, ngram=ngram, model=model, fed=fed)

    def report(self, st: CascadeState) -> dict:
        ng, md = int(st.ngram_rounds.sum()), int(st.model_rounds.sum())
        return {
            "cascade": {
                "ngram_rounds": ng,
                "model_rounds": md,
                "ngram_share": ng / (ng + md) if ng + md else None,
                "ngram_tokens_offered": int(st.ngram_tokens.sum()),
                "model_passes": int(st.model_passes),
                "catchup_passes": int(st.catchup_passes),
            }
        }
