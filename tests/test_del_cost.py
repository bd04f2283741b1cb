"""DEL with a measured round cost (jaxspec/selfspec/round_cost.py): the cost table and the "can an exit
pay at all" rule by hand, TPL's choice over a measured table against brute force, DEL keeping only the
exits that can pay (no seeding, no probes, plain decoding throughout when none can) with its output
still vanilla's, the measurement's structure on a tiny model, and the errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec.selfspec import DEL, ExitStats, exit_stats
from jaxspec.selfspec.round_cost import RoundCost, measure_round_cost
from jaxspec.speculative import Model, chain, speculate, summarize
from tests.helpers import random_prompts
from tests.test_del import CFG, N_NEW, damped, run, vanilla

L = CFG.num_layers  # 6
# exits 2 and 5; the deep exit drafts cheaply and verification widens slowly: only exit 5 can pay
SOME = RoundCost(
    exits=(2, 5),
    draft=(0.95, 0.3),
    verify=(1.0, 1.1, 1.2, 1.2, 1.4),
    measured=(2, 5),
    layers=L,
    max_len=128,
    step_ms=1.0,
)
NONE = RoundCost(
    exits=(2, 5), draft=(0.9, 0.99), verify=(1.0,) + (3.0,) * 4, measured=(2, 5), layers=L, max_len=128, step_ms=1.0
)


def test_cost_matrix_and_which_exits_can_pay_by_hand():
    m = SOME.matrix(4)
    assert m.shape == (2, 4)
    np.testing.assert_allclose(m[:, 0], [1, 1])  # a plain step
    np.testing.assert_allclose(m[1], [1, 1.1 + 0.3, 1.2 + 0.6, 1.2 + 0.9], rtol=1e-6)
    # at α = 1 exit 2 brings d + 1 tokens for 1.1 + 0.95 d steps or more: never above 1 per step
    assert exit_stats.can_pay(SOME.matrix(5)).tolist() == [False, True]
    assert exit_stats.can_pay(NONE.matrix(5)).tolist() == [False, False]
    # the layer model: every exit below L pays at α = 1, whatever the head
    assert exit_stats.can_pay(exit_stats.layer_costs((1, 3, 5), L, 4, head_cost=7.0)).all()
    with pytest.raises(ValueError, match="up to 4 drafts"):
        SOME.matrix(6)


def test_tpl_choice_over_a_measured_table_is_the_brute_force_argmax():
    rng = np.random.default_rng(1)
    for _ in range(30):
        draft = tuple(rng.uniform(0.2, 1.0, 3))
        verify = (1.0,) + tuple(np.cumsum(rng.uniform(0.0, 0.3, 5)) + 1.0)
        cost = RoundCost((1, 3, 5), draft, verify, (1, 3, 5), L, 128, 1.0).matrix(6)
        counts = rng.uniform(0, 20, (3, 2)).astype(np.float32)
        best, arg = -1.0, None
        for i in range(3):
            a = counts[i, 0] / counts[i].sum()
            for d in range(6):
                c = 1.0 if d == 0 else verify[d] + d * draft[i]
                tpl = sum(a**j for j in range(d + 1)) / c
                if tpl > best + 1e-6:
                    best, arg = tpl, (i, d)
        idx, d = exit_stats.choose(ExitStats(jnp.asarray(counts), jnp.zeros((3, 2))), cost)
        assert (int(idx), int(d)) == arg


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [False, True])
def test_no_exit_can_pay_is_plain_decoding_with_nothing_computed(streaming):
    tp = damped(0)
    prompts = random_prompts(np.random.default_rng(0), [6, 9])
    d = DEL(cost=NONE).bind(CFG)
    assert d.plain_only and d.shadow_layers == () and d.prompt_shadows == 0  # no shadow rows, no seeding
    st = run(tp, prompts, chain(4), DEL(cost=NONE), streaming=streaming)
    assert [list(r[: len(v)]) for r, v in zip(np.asarray(st.tokens), vanilla(tp, prompts))] == vanilla(tp, prompts)
    rep = d.report(jax.device_get(st.draft_state))
    s = summarize(st.stats)
    assert rep["exit_layer"] == [0] * (N_NEW - 1)  # one plain step per token after the prefill's
    assert s["drafted"] == 0 and rep["final_alpha"] == {}


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [False, True])
def test_only_the_exits_that_can_pay_are_candidates(streaming):
    tp = damped(0)  # deep layers damped: exit 5 agrees with the full model
    prompts = random_prompts(np.random.default_rng(2), [7])
    d = DEL(cost=SOME).bind(CFG)
    assert d.shadow_layers == (5,) and d.prompt_shadows == d.seed_context + 1 == 2
    assert d.describe()["cost"]["exits"] == [2, 5] and d.describe()["exits"] == [5]
    st = run(tp, prompts, chain(4), DEL(cost=SOME), streaming=streaming)
    out = np.asarray(st.tokens)[0]
    ref = vanilla(tp, prompts)[0]
    assert list(out[: len(ref)]) == ref
    rep = d.report(jax.device_get(st.draft_state))
    assert set(rep["exit_layer"]) <= {0, 5} and 5 in rep["exit_layer"]  # it drafts, at the exit that pays
    assert summarize(st.stats)["drafted"] > 0


def test_seeding_positions_default_by_cost_model():
    # a measured cost seeds from fewer prompt positions (its rows are dear); an explicit context wins
    assert DEL(cost="layers").bind(CFG).prompt_shadows == 9 and DEL(cost="measured").seed_context == 1
    assert DEL().seed_context == 1 and DEL(faithful=True).seed_context == DEL(head_cost=2.0).seed_context == 8
    assert DEL(cost=SOME).bind(CFG).prompt_shadows == 2 and DEL(cost=SOME, context=6).bind(CFG).prompt_shadows == 7
    assert DEL(cost="layers", context=0).bind(CFG).prompt_shadows == 1
    assert DEL(cost=SOME).bind(CFG).describe()["context"] == 1
    with pytest.raises(ValueError, match="context and head_cost must be >= 0"):
        DEL(context=-1).bind(CFG)


@pytest.mark.slow
def test_measure_round_cost_structure():
    tp = damped(0)
    c = measure_round_cost(tp, CFG, (1, 3, 5), depth=4, max_len=64, repeats=1)
    assert c.measured == (1, 3, 5) and set(c.exits) <= {1, 3, 5} and list(c.exits) == sorted(c.exits)
    assert len(c.draft) == len(c.exits) and len(c.verify) == 5 and c.verify[0] == 1.0 and c.depth == 4
    assert c.verify[3] == c.verify[2]  # 3 and 4 positions share the engine's width-4 block
    assert c.layers == L and c.max_len == 64
    assert exit_stats.can_pay(c.matrix(c.depth + 1)).all()  # every exit kept can pay under the costs kept
    hash(c)  # a static option of DEL
    with pytest.raises(ValueError, match="increasing"):
        measure_round_cost(tp, CFG, (3, 1), depth=4, max_len=64)
    with pytest.raises(ValueError, match="does not fit"):
        measure_round_cost(tp, CFG, (1, 3), depth=4, max_len=64, context=62)


def test_measure_round_cost_arithmetic_on_fixed_timings(monkeypatch):
    """The timer replaced by fixed times (ms): the costs are those times over the plain step's, each
    verification priced at its width bucket (chain_widths(5) = 1, 2, 4, 5), exit 5 dropped (it cannot pay:
    2 tokens for 1.5 + 0.9 steps, ..., 5 for 1.65 + 4 x 0.9) and the verification timed again with the kept exits'
    shadow rows, on a faster step (1.8 ms): the drafts rescaled to it, `step_ms` that step."""
    from jaxspec.selfspec import round_cost

    passes = []

    def fake_best_times(calls, repeats):
        passes.append(sorted(map(str, calls)))
        first = len(passes) == 1
        step = 2e-3 if first else 1.8e-3
        t = {"step": step}
        t |= {k: {0: 0.4e-3, 1: 1.0e-3, 2: 1.8e-3}[k[1]] for k in calls if isinstance(k, tuple)}
        t |= {w: step * ((1.4 if first else 1.2) + 0.05 * w) for w in calls if isinstance(w, int)}
        return t

    monkeypatch.setattr(round_cost, "best_times", fake_best_times)
    c = measure_round_cost(damped(0), CFG, (1, 3, 5), depth=4, max_len=64, repeats=1)
    assert passes == [["('draft', 0)", "('draft', 1)", "('draft', 2)", "2", "4", "5", "step"], ["2", "4", "5", "step"]]
    assert c.measured == (1, 3, 5) and c.exits == (1, 3) and c.step_ms == pytest.approx(1.8)
    np.testing.assert_allclose(c.draft, [0.4 / 1.8, 1.0 / 1.8], rtol=1e-12)
    np.testing.assert_allclose(c.verify, [1.0, 1.3, 1.4, 1.4, 1.45], rtol=1e-12)  # d + 1 = 2, 3→4, 4, 5


@pytest.mark.slow
def test_the_default_measures_the_round_cost_once_and_keeps_it_on_disk(tmp_path, monkeypatch, caplog):
    """DEL() prices rounds in measured plain steps (layers when faithful or given a head cost); speculate
    measures on the target and writes `$JAXSPEC_CACHE/round_cost/<key>.json`; the same configuration
    later reads it (no timing), another cache size is another key, an unreadable file is measured again."""
    from jaxspec.selfspec import round_cost

    assert DEL().cost_model == "measured" and DEL(faithful=True).cost_model == "layers"
    assert DEL(head_cost=1.0).cost_model == "layers" and DEL(head_cost="weights").cost_model == "layers"
    with pytest.raises(ValueError, match="'measured', 'layers'"):
        DEL(cost="timed").bind(CFG)
    with pytest.raises(ValueError, match=r"timed on the target's params.*or use DEL\(cost='layers'\)"):
        DEL().bind(CFG).shadow_layers  # bound, not measured: speculate / make_runner / calibrate measure it
    monkeypatch.setenv("JAXSPEC_CACHE", str(tmp_path))
    tp = damped(0)
    prompts = random_prompts(np.random.default_rng(3), [5, 8])
    go = lambda n=N_NEW, measure=False: speculate(  # noqa: E731
        Model(tp, CFG),
        None,
        prompts,
        method=chain(4),  # noqa: E731
        max_new_tokens=n,
        drafter=DEL(exits=(2, 5)),
        measure_costs=measure,
    )
    with pytest.raises(ValueError, match="round cost for this model, machine and cache size is not in"):
        go()  # never timed as a side effect: measuring is asked for
    assert not (tmp_path / "round_cost").exists()
    with caplog.at_level("INFO", logger="jaxspec"):
        first = go(measure=True)
    files = list((tmp_path / "round_cost").glob("*.json"))
    assert len(files) == 1 and "measured in" in caplog.text and str(files[0]) in caplog.text
    assert first.output_ids == vanilla(tp, prompts)
    rec = json.loads(files[0].read_text())
    assert rec["key"]["exits"] == [2, 5] and rec["key"]["depth"] == 4 and rec["cost"]["measured"] == [2, 5]

    def no_timing(*a, **k):
        raise AssertionError("measured again")

    monkeypatch.setattr(round_cost, "measure_round_cost", no_timing)
    again = go()  # read from the file: the same costs, the same output
    assert again.output_ids == first.output_ids
    assert round_cost._load(files[0], rec["key"]) == RoundCost(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in rec["cost"].items()}
    )
    with pytest.raises(ValueError, match="is not in"):
        go(n=150)  # a larger cache: another key, not on disk
    with pytest.raises(AssertionError, match="measured again"):
        go(n=150, measure=True)  # timed when asked
    with pytest.raises(AssertionError, match="measured again"):  # asked to: timed although the file is there
        speculate(
            Model(tp, CFG),
            None,
            prompts,
            method=chain(4),
            max_new_tokens=N_NEW,
            drafter=DEL(exits=(2, 5), remeasure=True),
        )
    files[0].write_text("{ not json")
    monkeypatch.setattr(round_cost, "measure_round_cost", lambda *a, **k: NONE)
    with caplog.at_level("WARNING", logger="jaxspec"):
        plain = go(measure=True)  # unreadable: measured again (here: no exit pays), the file rewritten
    assert "unreadable" in caplog.text and json.loads(files[0].read_text())["cost"]["exits"] == [2, 5]
    assert plain.output_ids == vanilla(tp, prompts) and plain.stats["drafted"] == 0


def test_cost_errors():
    with pytest.raises(ValueError, match="8-layer model"):
        DEL(cost=RoundCost((2,), (0.5,), (1.0, 1.1), (2,), 8, 64, 1.0)).bind(CFG)
    with pytest.raises(ValueError, match="leave `exits` unset"):
        DEL(exits=(1, 2), cost=SOME).bind(CFG)
    with pytest.raises(ValueError, match="head_cost"):
        DEL(cost=SOME, head_cost=2.0).bind(CFG)
    with pytest.raises(ValueError, match="positive"):
        RoundCost((2,), (0.0,), (1.0, 1.1), (2,), L, 64, 1.0)
    with pytest.raises(ValueError, match="measure them with depth >= 5"):
        run(damped(0), [[1, 2, 3]], chain(6), DEL(cost=SOME))
    DEL(cost=SOME).bind(CFG).bind(CFG)  # binding twice keeps the kept exits
    with pytest.raises(ValueError, match="remeasure.*'layers'"):
        DEL(cost="layers", remeasure=True).bind(CFG)


@pytest.mark.assets
def test_head_in_layers_counts_the_weights_a_step_reads():
    from jaxspec.params import head_in_layers
    from tests.helpers import tiny_cfg

    cfg = tiny_cfg(num_layers=3, qkv_bias=True)
    D, F, H, Hkv, K, V = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim,
        cfg.vocab_size,
    )
    layer = 2 * D + 2 * H * K * D + 2 * Hkv * K * D + 3 * F * D + H * K + 2 * Hkv * K  # norms, q/o, k/v, mlp, biases
    assert head_in_layers(cfg) == pytest.approx(V * D / layer)
    # the real models' (their configs, no weights): the head is 8 to 9 layers' worth (the 1.5B's, 5.0, is not
    # checked here: `make fetch-test` does not fetch it, and a test must not download a gigabyte)
    import gguf

    from conversion.assets import resolve
    from conversion.gguf_loader import config_from_gguf

    got = {
        m: head_in_layers(config_from_gguf(gguf.GGUFReader(resolve(m))))
        for m in ("qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct")
    }
    assert [round(v, 1) for v in got.values()] == [9.1, 8.0]


def test_head_cost_weights_prices_the_head_by_its_weights():
    from jaxspec.params import head_in_layers

    h = head_in_layers(CFG)
    assert h > 0  # 0.27 for this tiny model (vocab 97)
    table = lambda d: d.bind(CFG)._cost_table(4)  # noqa: E731
    np.testing.assert_allclose(
        table(DEL(cost="layers", exits=(2, 5))), exit_stats.layer_costs((2, 5), L, 4)
    )  # official
    np.testing.assert_allclose(table(DEL(exits=(2, 5), head_cost="weights")), exit_stats.layer_costs((2, 5), L, 4, h))
    np.testing.assert_allclose(
        table(DEL(exits=(2, 5), faithful=True, head_cost=1.5)), exit_stats.layer_costs((2, 5), L, 4, 1.5)
    )
    assert DEL(exits=(2, 5), head_cost="weights").bind(CFG).describe()["head_cost"] == pytest.approx(h, abs=1e-3)
    assert DEL(cost=SOME).bind(CFG).describe()["head_cost"] is None
    with pytest.raises(ValueError, match="head_cost 'bytes': layers"):
        DEL(head_cost="bytes").bind(CFG)
    with pytest.raises(ValueError, match="head_cost is part of a measured round cost"):
        DEL(cost=SOME, head_cost="weights").bind(CFG)


def test_the_head_cost_decides_against_a_shallow_exit_the_layer_count_would_draft_at():
    """The 0.5B's case, in its numbers (L 24, head 9.1 layers): exit 3 agreeing 0.3 of the time beats
    plain decoding under the layer count ((1 + .3) / (24 + 3) > 1/24) but not once the head is priced in
    ((1 + .3) / (33.1 + 12.1) < 1/33.1); exit 23 must agree more than 0.97 instead of 0.96."""
    stats = lambda a: ExitStats(jnp.asarray([[100 * a, 100 * (1 - a)]], jnp.float32), jnp.zeros((1, 2)))  # noqa: E731
    layers, weights = (exit_stats.layer_costs(e, 24, 4, h) for e, h in (((3,), 0.0), ((3,), 9.1)))
    assert int(exit_stats.choose(stats(0.3), layers)[1]) >= 1
    assert int(exit_stats.choose(stats(0.3), weights)[1]) == 0
    deep, deep_h = exit_stats.layer_costs((23,), 24, 2, 0.0), exit_stats.layer_costs((23,), 24, 2, 9.1)
    assert int(exit_stats.choose(stats(0.965), deep)[1]) == 1 and int(exit_stats.choose(stats(0.965), deep_h)[1]) == 0
    assert int(exit_stats.choose(stats(0.98), deep_h)[1]) == 1


def test_cli_head_cost_takes_layers_or_weights():
    from jaxspec.cli import build_parser
    from jaxspec.cli_methods import resolve

    args = lambda *a: build_parser().parse_args(["generate", "--model", "m", "--method", "del", *a])  # noqa: E731
    _drafter = lambda a: resolve(a).drafter  # noqa: E731
    assert _drafter(args()).head_cost == 0.0 and _drafter(args()).cost_model == "measured"
    assert _drafter(args("--head-cost", "1")).cost_model == _drafter(args("--cost", "layers")).cost_model == "layers"
    assert _drafter(args("--head-cost", "weights")).head_cost == "weights"
    assert _drafter(args("--head-cost", "2.5")).head_cost == 2.5
    assert _drafter(args("--cost", "measured")).cost == "measured"
    assert _drafter(args("--remeasure-cost")).remeasure and not _drafter(args()).remeasure
    with pytest.raises(ValueError, match="remeasure"):
        _drafter(args("--remeasure-cost", "--cost", "layers")).bind(CFG)
    with pytest.raises(SystemExit):
        args("--head-cost", "lots")
