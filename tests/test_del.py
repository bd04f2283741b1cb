"""DEL (jaxspec/selfspec/del_drafter.py, exit_stats.py, dynamic_exit.py) and the FS baseline (fsm.py):
the TPL choice against brute force on synthetic α, the τ rule, the clipping rule and the decayed update
by hand; the exit dispatches against a static exit; the statistics of a whole run against a slow reference
(teacher-forced passes with the head at every layer); greedy output identical to vanilla (property-based
over random damped targets, candidate sets, caps, batch, a forced exit sequence that changes every round)
with the one cache left as vanilla's; each official quirk under `faithful=True`; the errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxspec import DecodeSpec, generate, init_cache, init_params, output_ids
from jaxspec.masks import causal_mask
from jaxspec.model import head
from jaxspec.selfspec import DEL, FSM, DELState, DELTrace, ExitStats, LayerSkip, exit_stats, spread_exits
from jaxspec.selfspec.dynamic_exit import exit_logits
from jaxspec.selfspec.layerskip import shallow_logits
from jaxspec.speculative import Model, chain, make_spec, run_speculation, speculate, summarize, tree
from jaxspec.speculative.engine import draft_phase, spec_prefill, verify_phase
from jaxspec.speculative.seam import Outcome, Round, Target
from jaxspec.speculative.tree import init_tree
from tests.helpers import exact_forward, examples, random_prompts, tiny_cfg
from tests.spec_helpers import assert_target_cache_is_vanillas

CFG = tiny_cfg(num_layers=6)
N_NEW, WIDTH, SLOTS = 24, 48, 128


def damped(seed: int, damp=(1, 1, 0.5, 0.3, 0.2, 0.1)):
    """Deep layers damped: the early exits agree with the full model more, the deeper they are."""
    tp = init_params(jax.random.key(seed), CFG, scale=0.15)
    return dict(tp, layers=[dict(l, wo=l["wo"] * s, w_down=l["w_down"] * s) for l, s in zip(tp["layers"], damp)])


def run(tp, prompts, method, drafter, eos=(), n_new=N_NEW, streaming=False):
    """The on-device generation, or (`streaming`) the timing mode's rounds: prefill, then draft and
    verify phases one round at a time — full rounds throughout, no plain-step inner loop."""
    spec = make_spec(CFG, drafter.bind(CFG), method, prompt_len=WIDTH, max_new_tokens=n_new, eos_ids=eos, max_len=SLOTS)
    toks = np.zeros((len(prompts), WIDTH), np.int32)
    for i, p in enumerate(prompts):
        toks[i, : len(p)] = p
    args = (tp, None, jnp.asarray(toks), jnp.asarray([len(p) for p in prompts], jnp.int32), jax.random.key(0))
    if not streaming:
        return run_speculation(*args, spec=spec)
    state = spec_prefill(*args, spec=spec)
    while not bool(np.all(state.done)):
        state, t = draft_phase(tp, None, state, spec=spec)
        state = verify_phase(tp, None, state, t, spec=spec)
    return state


def vanilla(tp, prompts, eos=(), n_new=N_NEW):
    out = []
    for p in prompts:
        toks = np.zeros((1, WIDTH), np.int32)
        toks[0, : len(p)] = p
        out += output_ids(
            generate(
                tp,
                jnp.asarray(toks),
                jnp.asarray([len(p)]),
                jax.random.key(0),
                spec=DecodeSpec(CFG, n_new, SLOTS, eos_ids=eos),
            )
        )
    return out


# ---- the rules by hand -------------------------------------------------------------------------------


@pytest.mark.parametrize("head_cost", [0.0, 2.5])
def test_tpl_choice_is_the_brute_force_argmax(head_cost):
    rng = np.random.default_rng(0)
    exits, L, G = (1, 2, 4, 5), 6, 7
    for _ in range(30):
        counts = rng.uniform(0, 20, (4, 2)).astype(np.float32)
        stats = ExitStats(jnp.asarray(counts), jnp.zeros((4, 2)))
        best, arg = -1.0, None
        for i, e in enumerate(exits):
            a = counts[i, 0] / counts[i].sum()
            for d in range(G):
                tpl = sum(a**j for j in range(d + 1)) / (L + head_cost + d * (e + head_cost))
                if tpl > best + 1e-6:  # the first maximum: smallest exit, then smallest d
                    best, arg = tpl, (i, d)
        idx, d = exit_stats.choose(stats, exit_stats.layer_costs(exits, L, G, head_cost))
        assert (int(idx), int(d)) == arg
    # perfect agreement at the deepest exit beats plain decoding; ties at d = 0 pick the first exit
    perfect = ExitStats(jnp.asarray([[0.0, 5.0], [0.0, 5.0], [0.0, 5.0], [9.0, 0.0]]), jnp.zeros((4, 2)))
    assert [int(v) for v in exit_stats.choose(perfect, exit_stats.layer_costs(exits, L, G))] == [3, G - 1]
    hopeless = ExitStats(jnp.asarray([[0.0, 5.0]] * 4), jnp.zeros((4, 2)))
    assert [int(v) for v in exit_stats.choose(hopeless, exit_stats.layer_costs(exits, L, G))] == [0, 0]


def test_tau_rule():
    stats = ExitStats(
        jnp.asarray([[4.0, 2.0], [3.0, 0.0], [0.0, 0.0]]), jnp.asarray([[3.2, 0.6], [2.4, 0.0], [0.0, 0.0]])
    )
    assert float(exit_stats.threshold(stats, 0, False)) == pytest.approx(0.5 * (0.8 + 0.3))
    assert float(exit_stats.threshold(stats, 0, True)) == pytest.approx(0.5 * (0.8 + 0.3))
    assert float(exit_stats.threshold(stats, 1, False)) == pytest.approx(0.5 * 0.8)  # no miss yet: mismatched 0
    assert np.isnan(float(exit_stats.threshold(stats, 1, True)))  # the official NaN
    assert float(exit_stats.threshold(stats, 2, False)) == pytest.approx(0.5)


def test_clipping_and_the_decayed_update():
    m = np.array([[1, 1, 0, 1, 0], [1, 1, 1, 1, 0], [0, 1, 1, 1, 1]], bool)  # match at the current exit
    real = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]], bool)
    valid = np.asarray(exit_stats.valid_columns(jnp.asarray(m), jnp.asarray(real), True))
    np.testing.assert_array_equal(valid, [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert np.asarray(exit_stats.valid_columns(jnp.asarray(m), jnp.asarray(real), False)).tolist() == real.tolist()

    match = jnp.asarray(np.stack([m, ~m], -1))  # exit 0 as above, exit 1 its opposite
    conf = jnp.full(match.shape, 0.5).at[..., 1].set(0.25)
    s0 = ExitStats(jnp.asarray([[2.0, 1.0], [1.0, 1.0]]), jnp.asarray([[1.0, 0.5], [0.5, 0.5]]))
    s1 = exit_stats.update(s0, match, conf, jnp.asarray(valid), 0.9)
    hit0 = (valid & m).sum()
    miss0 = (valid & ~m).sum()
    np.testing.assert_allclose(np.asarray(s1.counts), [[1.8 + hit0, 0.9 + miss0], [0.9 + miss0, 0.9 + hit0]])
    np.testing.assert_allclose(
        np.asarray(s1.conf),
        [[0.9 + 0.5 * hit0, 0.45 + 0.5 * miss0], [0.45 + 0.25 * miss0, 0.45 + 0.25 * hit0]],
        rtol=1e-6,
    )


def test_spread_exits():
    assert spread_exits(28) == (3, 7, 10, 14, 17, 20, 24, 27)
    assert spread_exits(6) == (1, 2, 3, 4, 5) and spread_exits(2) == (1,)


# ---- the dynamic exit -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dispatch", ["segments", "switch"])
def test_dynamic_exit_equals_the_static_one(dispatch):
    tp = damped(0)
    exits = (1, 3, 4)
    toks = jnp.asarray(random_prompts(np.random.default_rng(1), [7, 7]), jnp.int32)
    cache = init_cache(CFG, 2, 16)
    pos = jnp.broadcast_to(jnp.arange(7), (2, 7))
    mask = causal_mask(cache.lengths, 7, 16)
    f = jax.jit(lambda i: exit_logits(tp, toks, cache, pos, mask, CFG, exits, i, dispatch))
    for i, e in enumerate(exits):
        lg, c = f(jnp.int32(i))
        ref, rc, _ = shallow_logits(tp, toks, cache, pos, mask, e, CFG)
        np.testing.assert_allclose(np.asarray(lg), np.asarray(ref), atol=1e-5)
        for l in range(CFG.num_layers):  # the layers below the exit written, the others untouched
            np.testing.assert_allclose(np.asarray(c.k[l]), np.asarray(rc.k[l] if l < e else cache.k[l]), atol=1e-5)


@pytest.mark.slow
def test_drafts_from_the_shared_cache_equal_the_exit_recomputed_from_scratch():
    """A round drafted at exit E in the target's cache == the first E layers run over the whole sequence."""
    tp = damped(2)
    prompts = random_prompts(np.random.default_rng(3), [9, 16])
    d = DEL(exits=(2, 4), faithful=True).bind(CFG)  # faithful: always drafts
    state = run(tp, prompts, chain(5), d, n_new=6)
    spec = make_spec(CFG, d, chain(5), prompt_len=WIDTH, max_new_tokens=6, max_len=SLOTS)
    outs = output_ids(state)
    for idx, E in enumerate(d.shadow_layers):
        ds = dataclasses.replace(state.draft_state, exit=jnp.int32(idx), tau=jnp.float32(0.0))
        rnd = Round(state.last, state.committed, jnp.ones((2,), bool))
        _, t, _ = d.propose(
            None, ds, Target(tp, state.target_cache), rnd, jax.random.key(0), method=spec.method, sampling=spec.sampling
        )
        drafts = np.asarray(t.tokens)
        assert np.asarray(t.valid).all()  # τ = 0: the whole chain
        shallow = dict(tp, layers=tp["layers"][:E])
        cfg_e = dataclasses.replace(CFG, num_layers=E)
        for b, p in enumerate(prompts):
            seq = list(p) + outs[b] + drafts[b, :-1].tolist()
            lg = exact_forward(shallow, seq, cfg_e, 64)[0]
            greedy = lg[0, -5:].argmax(-1)
            assert greedy.tolist() == drafts[b].tolist()


# ---- whole runs -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CyclingDEL(DEL):
    """DEL whose exit is forced to change every round, drafting from round 1 on (the statistics still
    run): any exit sequence. Under the layer count: decisions that do not depend on this machine's timing."""

    cost: object = "layers"
    stride: int = 1

    def init(self, params, target, prompts, prompt_lens, *, max_len, method):
        st = super().init(params, target, prompts, prompt_lens, max_len=max_len, method=method)
        return dataclasses.replace(st, gamma=jnp.int32(1), gap=jnp.int32(1), wait=jnp.int32(0))

    def commit(self, params, st, out, *, method):
        st = super().commit(params, st, out, method=method)
        m = len(self.shadow_layers)
        return dataclasses.replace(st, exit=(st.rounds * self.stride) % m, gamma=jnp.int32(1))


@pytest.mark.slow
@settings(max_examples=examples(12))
@given(
    seed=st.integers(0, 3),
    exits=st.sampled_from([(1,), (2, 5), (1, 3, 4, 5), "spread"]),
    cap=st.sampled_from([1, 4, 9]),
    faithful=st.booleans(),
    dispatch=st.sampled_from(["segments", "switch"]),
    cycle=st.sampled_from([0, 1, 2]),
    batch=st.integers(1, 3),
    data=st.data(),
)
def test_greedy_del_equals_vanilla(seed, exits, cap, faithful, dispatch, cycle, batch, data):
    damp = data.draw(st.lists(st.sampled_from([1.0, 0.5, 0.2, 0.05]), min_size=6, max_size=6))
    tp = damped(seed, damp)
    lengths = data.draw(st.lists(st.integers(1, 30), min_size=batch, max_size=batch))
    prompts = random_prompts(np.random.default_rng(data.draw(st.integers(0, 2**16))), lengths)
    kind = CyclingDEL if cycle else DEL
    extra = {"stride": cycle} if cycle else {}
    state = run(
        tp,
        prompts,
        chain(cap),
        kind(exits=exits, faithful=faithful, dispatch=dispatch, cost="layers", **extra),
        eos=(7,),
    )
    assert output_ids(state) == vanilla(tp, prompts, eos=(7,))


@pytest.mark.slow
def test_greedy_fsm_equals_vanilla_and_moves_gamma():
    tp = damped(1)
    prompts = random_prompts(np.random.default_rng(8), [4, 21, 11])
    for start in (0, 2, 6):
        state = run(tp, prompts, chain(6), FSM(3, start=start))
        assert output_ids(state) == vanilla(tp, prompts)
    out = Outcome(
        None,
        jnp.asarray([2, 1, 0, 3]),
        None,
        None,
        None,
        None,
        jnp.asarray([True, True, True, False]),
        jnp.asarray([2, 3, 0, 3]),
        None,
        None,
    )
    g = FSM(3).bind(CFG).commit(None, jnp.asarray([2, 3, 0, 3]), out, method=chain(6))
    assert g.tolist() == [3, 2, 1, 3]  # all in: +1; a rejection: −1; γ = 0 counts as all in; a finished row keeps


@pytest.mark.slow
def test_the_one_cache_equals_vanilla_decoding():
    tp = damped(5)
    prompts = random_prompts(np.random.default_rng(5), [3, 19, 30])
    state = run(tp, prompts, chain(6), CyclingDEL(exits=(1, 3, 5)))
    outs = output_ids(state)
    assert outs == vanilla(tp, prompts)
    assert_target_cache_is_vanillas(state.target_cache, tp, CFG, prompts, outs, SLOTS)


def _reference_stats(tp, prompt, drafter: DEL, trace, rounds: int, context: int):
    """The statistics from scratch: one teacher-forced pass over prompt + the vanilla continuation with
    the head applied after every candidate exit; per round the columns [T-1, T-1+k] of the run's trace,
    clipped at the first mismatch at the round's exit; seeded from the prompt's last `context` + 1."""
    exits, omega = drafter.shadow_layers, drafter.omega
    seq = list(prompt) + vanilla(tp, [prompt], n_new=N_NEW + 24)[0]
    _, _, hid = exact_forward(tp, seq, CFG, 128, return_hiddens=True)
    final = np.asarray(jnp.argmax(head(tp, hid[-1], CFG)[0], -1))
    lg = np.asarray(jnp.stack([head(tp, hid[e - 1], CFG)[0] for e in exits], 1), np.float64)  # [S, m, V]
    shadow = lg.argmax(-1)
    conf = np.exp(lg.max(-1) - np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) - lg.max(-1))
    match = shadow == final[:, None]  # [S, m]
    counts, sums = np.zeros((len(exits), 2)), np.zeros((len(exits), 2))

    def add(cols):
        nonlocal counts, sums
        counts, sums = omega * counts, omega * sums
        for c in cols:
            counts[:, 0] += match[c]
            counts[:, 1] += ~match[c]
            sums[:, 0] += match[c] * conf[c]
            sums[:, 1] += ~match[c] * conf[c]

    P = len(prompt)
    add(range(max(0, P - context - 1), P))
    T = P + 1
    for r in range(rounds):
        k, n, E = int(trace.drafted[r]), int(trace.accepted[r]), int(trace.exit_layer[r])
        cols = list(range(T - 1, T + k))
        if E > 0:
            at = match[cols, exits.index(E)]
            if not at.all():
                cols = cols[: int(np.argmin(at)) + 1]
        add(cols)
        T += n + 1
    return counts, sums


@pytest.mark.slow
@pytest.mark.parametrize("exits,cap", [((1, 2, 3, 4, 5), 6), ((2, 4), 3)])
def test_statistics_equal_a_teacher_forced_reference(exits, cap):
    tp = damped(3, (1, 1, 0.3, 0.2, 0.1, 0.05))
    prompt = random_prompts(np.random.default_rng(6), [40])[0]
    d = CyclingDEL(exits=exits).bind(CFG)  # every exit gets to be the current one
    state = run(tp, [prompt], chain(cap), d)
    ds = state.draft_state
    rounds = int(ds.rounds)
    assert rounds == summarize(state.stats)["rounds"]
    counts, sums = _reference_stats(tp, prompt, d, jax.tree.map(np.asarray, ds.trace), rounds, d.seed_context)
    np.testing.assert_allclose(np.asarray(ds.stats.counts), counts, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ds.stats.conf), sums, rtol=1e-4, atol=1e-5)
    assert (np.asarray(ds.trace.drafted[:rounds]) > 0).all()  # every round drafted and was checked


# ---- the official quirks ------------------------------------------------------------------------------


def _state(d: DEL, counts, gamma, exit=0, tau=0.0) -> DELState:
    m = len(d.shadow_layers)
    trace = DELTrace(*(jnp.zeros((4,), t) for t in (jnp.int32, jnp.int32, jnp.float32, jnp.float32, jnp.float32)))
    return DELState(
        ExitStats(jnp.asarray(counts, jnp.float32), jnp.ones((m, 2), jnp.float32)),
        jnp.int32(exit),
        jnp.int32(gamma),
        jnp.float32(tau),
        jnp.int32(0),
        jnp.int32(1),
        jnp.int32(0),
        trace,
    )


@pytest.mark.slow
def test_faithful_quirk_1_drafts_when_tpl_says_plain_decoding():
    tp = damped(0)
    prompts = random_prompts(np.random.default_rng(0), [6])
    pre = run(tp, prompts, chain(4), DEL(cost="layers"), n_new=2)
    rnd = Round(pre.last, pre.committed, jnp.ones((1,), bool))
    for faithful, drafts in [(True, 4), (False, 0)]:
        d = DEL(cost="layers", exits=(1, 3), faithful=faithful).bind(CFG)
        hopeless = _state(d, [[0.0, 9.0], [0.0, 9.0]], gamma=0)
        idx, gamma = exit_stats.choose(hopeless.stats, exit_stats.layer_costs(d.shadow_layers, CFG.num_layers, 4))
        assert (int(idx), int(gamma)) == (0, 0)  # plain decoding wins; the first exit in the argmax
        _, t, _ = d.propose(
            None,
            hopeless,
            Target(tp, pre.target_cache),
            rnd,
            jax.random.key(0),
            method=chain(4),
            sampling=make_spec(CFG, d, chain(4), prompt_len=WIDTH, max_new_tokens=2).sampling,
        )
        assert int(np.asarray(t.valid).sum()) == drafts


@pytest.mark.slow
def test_faithful_quirk_2_nan_tau_never_stops_drafting():
    d_f, d_x = DEL(exits=(1, 3), faithful=True).bind(CFG), DEL(cost="layers", exits=(1, 3)).bind(CFG)
    never_missed = ExitStats(jnp.asarray([[5.0, 0.0], [5.0, 0.0]]), jnp.asarray([[2.0, 0.0], [2.0, 0.0]]))
    assert np.isnan(float(d_f.decide(never_missed, 4)[2]))
    assert float(d_x.decide(never_missed, 4)[2]) == pytest.approx(0.2)
    tp = damped(0)
    prompts = random_prompts(np.random.default_rng(0), [6])
    pre = run(tp, prompts, chain(8), DEL(cost="layers"), n_new=2)
    rnd = Round(pre.last, pre.committed, jnp.ones((1,), bool))
    st_nan = dataclasses.replace(_state(d_f, [[5.0, 0.0], [5.0, 0.0]], gamma=2), tau=jnp.float32(jnp.nan))
    _, t, _ = d_f.propose(
        None,
        st_nan,
        Target(tp, pre.target_cache),
        rnd,
        jax.random.key(0),
        method=chain(8),
        sampling=make_spec(CFG, d_f, chain(8), prompt_len=WIDTH, max_new_tokens=2).sampling,
    )
    assert np.asarray(t.valid).all()  # NaN: `conf < τ` never holds, the cap ends the chain


def test_faithful_quirk_3_no_clipping_when_d_star_is_zero():
    B, N, V = 1, 4, CFG.vocab_size
    logits = jax.nn.one_hot(jnp.asarray([[1, 2, 3, 4, 5]]), V) * 5.0  # the full model's tokens 1..5
    shadow = jnp.asarray([[[1], [9], [3], [4], [9]]])  # the exit matches at columns 0, 2, 3
    out = Outcome(
        init_tree(B, chain(N).shape, None),
        jnp.asarray([0]),
        None,
        jnp.asarray([9]),
        None,
        None,
        jnp.asarray([True]),
        jnp.asarray([N]),
        logits,
        None,
        shadow,
        jnp.full((1, 5, 1), 0.5),
    )
    seen = {}
    for faithful in (True, False):
        d = DEL(cost="layers", exits=(2,), faithful=faithful, omega=1.0).bind(CFG)
        st0 = _state(d, [[0.0, 0.0]], gamma=0)
        seen[faithful] = np.asarray(d.commit(None, st0, out, method=chain(N)).stats.counts)[0].tolist()
    assert seen[True] == [3.0, 2.0]  # every column: after the first miss too
    assert seen[False] == [1.0, 1.0]  # up to and including the first miss


# ---- errors -------------------------------------------------------------------------------------------


def test_del_errors():
    tp = damped(0)
    for bad, msg in [
        ((), "at least one"),
        ((3, 2), "increasing"),
        ((2, 2), "increasing"),
        ((0, 3), "outside"),
        ((2, 6), "outside"),
        ("deep", "spread"),
    ]:
        with pytest.raises(ValueError, match=msg):
            DEL(exits=bad).bind(CFG)
    with pytest.raises(ValueError, match="omega"):
        DEL(omega=0.0).bind(CFG)
    with pytest.raises(ValueError, match="dispatch"):
        DEL(dispatch="per-layer").bind(CFG)
    with pytest.raises(ValueError, match="not a tree"):
        run(tp, [[1, 2, 3]], tree(3, 2), DEL(cost="layers"))
    with pytest.raises(ValueError, match="adaptive"):
        run(tp, [[1, 2, 3]], chain(2, adaptive=True), DEL(cost="layers"))
    with pytest.raises(ValueError, match="starting draft length"):
        run(tp, [[1, 2, 3]], chain(2), FSM(1, start=3))
    headless = {k: v for k, v in tp.items() if k != "lm_head"}
    for drafter in (DEL(), LayerSkip(2)):
        with pytest.raises(ValueError, match="needs the target's final norm and LM head; its params lack .'lm_head'."):
            speculate(Model(headless, CFG), None, [[1, 2, 3]], method=chain(2), max_new_tokens=2, drafter=drafter)
    with pytest.raises(ValueError, match="draft=None"):
        DEL(cost="layers").bind(CFG).prepare({"embed": 0})


@dataclasses.dataclass(frozen=True)
class FullBlockDEL(DEL):
    cost: object = "layers"
    variable_depth = False  # verification always over [last] + the whole cap


@pytest.mark.slow
def test_narrow_verification_changes_nothing_but_the_block():
    tp = damped(4, (1, 1, 0.3, 0.2, 0.1, 0.05))
    prompts = random_prompts(np.random.default_rng(9), [7, 25])
    from jaxspec.speculative.verification import verify_widths

    spec = make_spec(CFG, DEL(cost="layers").bind(CFG), chain(18), prompt_len=WIDTH, max_new_tokens=4, max_len=SLOTS)
    assert verify_widths(spec) == (1, 2, 4, 8, 16, 19)
    a, b = run(tp, prompts, chain(18), DEL(cost="layers")), run(tp, prompts, chain(18), FullBlockDEL())
    assert output_ids(a) == output_ids(b) == vanilla(tp, prompts)
    assert summarize(a.stats) == summarize(b.stats)
    for x, y in zip(jax.tree.leaves(a.draft_state), jax.tree.leaves(b.draft_state)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5)
