"""The speculative benchmark's table: per-source rows and Spec-Bench categories pooled as one set."""

import json
import sys

import pytest

from experiments.speculative import bench_speculative


def _run(method, prompts, new_tokens, prefill_s, decode_s, rounds=0, accepted=0, cost=1.0, hf=None):
    """A minimal result file: `prompts` rows sharing the totals evenly."""
    each = {"new_tokens": new_tokens // prompts, "prefill_s": prefill_s / prompts, "decode_s": decode_s / prompts}
    rows = [{**each, **({"hf_tok_per_s": hf} if hf else {})} for _ in range(prompts)]
    s = {
        "method": method,
        "method_config": None if method == "vanilla" else {"shape": {"depth": 4, "width": 1}},
        "total": {"prompts": prompts, "new_tokens": new_tokens, "prefill_s": prefill_s, "decode_s": decode_s},
        "tok_per_s": new_tokens / (prefill_s + decode_s),
        "decode_tok_per_s": (new_tokens - prompts) / decode_s,
    }
    if method != "vanilla":
        mal = 1 + accepted / rounds
        s.update(
            rounds=rounds,
            accepted=accepted,
            mean_accepted_length=mal,
            round_cost_in_target_steps=cost,
            analytic_speedup=mal / cost,
            vanilla_identical=prompts,
            speedup=1.0,
            fraction_of_analytic=1.0,
        )
    return {"prompts": rows, "summary": s}


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_speculative, "RESULTS", tmp_path)
    runs = {
        "a": (
            _run("vanilla", 2, 40, 1.0, 9.0),
            _run("chain", 2, 40, 2.0, 3.0, 10, 18, 2.0, hf=4.0),
            _run("tree", 2, 40, 2.0, 6.0, 10, 10, 2.0),
        ),
        "b": (
            _run("vanilla", 2, 20, 1.0, 9.0),
            _run("chain", 2, 20, 2.0, 3.0, 5, 5, 4.0, hf=2.0),
            _run("tree", 2, 20, 2.0, 3.0, 5, 5, 2.0),
        ),
    }
    for cat, files in runs.items():
        for kind, r in zip(("vanilla", "chain", "tree"), files):
            (tmp_path / f"spec_spec-bench-{cat}_{kind}.json").write_text(json.dumps(r))
    return tmp_path


def test_categories_pool_as_tokens_over_time(results):
    v, c, t = bench_speculative._pooled([bench_speculative._load(f"spec-bench-{x}") for x in "ab"])
    assert v["tok_per_s"] == pytest.approx(60 / 20) and c["tok_per_s"] == pytest.approx(60 / 10)
    assert c["speedup"] == pytest.approx(2.0) and t["speedup"] == pytest.approx((60 / 13) / 3)
    assert c["decode_speedup"] == pytest.approx((56 / 6) / (56 / 18))
    assert c["mean_accepted_length"] == pytest.approx(1 + 23 / 15)
    # rounds-weighted round cost: (10·2 + 5·4) / 15
    assert c["analytic_speedup"] == pytest.approx((1 + 23 / 15) / (40 / 15))
    assert c["fraction_of_analytic"] == pytest.approx(c["decode_speedup"] / c["analytic_speedup"])
    # HF: its time per prompt is tokens / tok/s → 60 tokens over 2·20/4 + 2·10/2 s
    assert c["hf_tok_per_s"] == pytest.approx(60 / 20) and "hf_tok_per_s" not in t
    assert c["vanilla_identical"] == 4 and v["total"]["prompts"] == 4


def test_table_has_a_row_per_category_and_the_pooled_row(results):
    md = bench_speculative.table()
    assert "| spec-bench-a | 2 |" in md and "| spec-bench-b | 2 |" in md
    pooled = next(line for line in md.splitlines() if "2 categories pooled" in line)
    assert "| 4 | 3.00 | 6.00 (k=4) | 2.00× |" in pooled
    (results / "spec_spec-bench-b_tree.json").unlink()  # an incomplete category is left out
    md = bench_speculative.table()
    assert "spec-bench-b" not in md and "pooled" not in md


def test_spec_bench_runs_a_process_per_category(results, monkeypatch):
    calls = []
    monkeypatch.setattr(bench_speculative.subprocess, "run", lambda argv, check: calls.append(argv))
    (results / "spec_sweep_spec-bench.json").write_text("{}")
    monkeypatch.setattr(
        sys, "argv", ["x", "--sets", "spec-bench", "--categories", "coding", "math", "--chains", "3", "5", "--no-hf"]
    )
    bench_speculative.main()  # no --resume: the old sweep and those categories' results go first
    assert not (results / "spec_sweep_spec-bench.json").exists()
    assert (results / "spec_spec-bench-a_chain.json").exists()  # other categories are kept
    assert [c[c.index("--categories") + 1 :] for c in calls] == [["coding"], ["math"]]
    assert all("--resume" in c and "--no-hf" in c and c[c.index("--chains") + 1 :][:2] == ["3", "5"] for c in calls)


def test_several_sets_run_a_process_each(results, monkeypatch):
    calls = []
    monkeypatch.setattr(bench_speculative.subprocess, "run", lambda argv, check: calls.append(argv))
    monkeypatch.setattr(sys, "argv", ["x", "--sets", "humaneval", "humaneval-body", "--prompts", "5", "--resume"])
    bench_speculative.main()
    assert [c[c.index("--sets") + 1] for c in calls] == ["humaneval", "humaneval-body"]
    assert all("--resume" in c and c[c.index("--prompts") + 1] == "5" and "--no-hf" not in c for c in calls)


def test_unknown_category_is_named(results, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["x", "--sets", "spec-bench", "--categories", "coding", "poetry"])
    with pytest.raises(SystemExit, match=r"unknown Spec-Bench categories \['poetry'\]; known: coding"):
        bench_speculative.main()


def test_every_experiment_script_imports_and_has_a_main():
    """Each `python -m experiments.<topic>.<script>` module imports (its heavy imports are deferred) and
    has a main: a moved helper or a stale import fails here, not hours into a run."""
    import importlib
    import pkgutil

    import experiments

    scripts = [
        m.name
        for topic in pkgutil.iter_modules(experiments.__path__, "experiments.")
        if topic.ispkg and topic.name != "experiments.common"
        for m in pkgutil.iter_modules(importlib.import_module(topic.name).__path__, topic.name + ".")
    ]
    assert "experiments.speculative.defaults" in scripts and "experiments.selfspec.del_costs" in scripts
    data_only = {"experiments.easyspec.easyspec_data", "experiments.hot_vocab.hot_vocab_plot"}  # shared by scripts
    for name in scripts:
        mod = importlib.import_module(name)
        assert name in data_only or callable(getattr(mod, "main", None)), f"{name} has no main()"


def test_defaults_table_marks_a_method_behind_the_chain(tmp_path, monkeypatch, capsys):
    """experiments/speculative/defaults.py: method specs parse, sets pool as tokens over time, and a cell
    whose decode speedup is below the default chain's is marked."""
    from experiments.speculative import defaults

    assert defaults.parse_spec("cascade:k=7,min_match=3") == ("cascade", {"k": 7, "min_match": 3})
    assert defaults.parse_spec("cascade") == ("cascade", {})
    with pytest.raises(SystemExit, match="opt=value"):
        defaults.parse_spec("cascade:k")
    stats = {"rounds": 10, "drafted": 30, "accepted": 20, "per_position": [0.5], "histogram": [1, 2]}
    stats |= {"acceptance_rate": 2 / 3, "mean_accepted_length": 3.0}

    def row(decode_s, cascade=False):
        r = {"prompt_tokens": 5, "new_tokens": 64, "prefill_s": 1.0, "decode_s": decode_s, "identical": True}
        if decode_s != 10.0:
            r["stats"] = stats
        if cascade:
            r["drafter"] = {"cascade": dict(ngram_rounds=3, model_rounds=7, ngram_tokens_offered=5)}
            r["drafter"]["cascade"] |= dict(model_passes=7, catchup_passes=1)
        return r

    chunk = {"source": "spec-bench:qa", "offset": 0, "n": 2, "config": {}}
    chunk["rows"] = {"vanilla": [row(10.0)] * 2, "chain": [row(6.3)] * 2, "cascade": [row(7.0, True)] * 2}
    faster = dict(chunk, source="humaneval", rows=dict(chunk["rows"], cascade=[row(5.0, True)] * 2))
    monkeypatch.setattr(defaults, "RESULTS", tmp_path)
    (tmp_path / "defaults_t.json").write_text(json.dumps({"target": "t", "draft": "d", "chunks": [chunk, faster]}))
    defaults.cmd_table(type("A", (), {"tag": "_t"}))
    lines = {ln.split(" | ")[0].strip("| "): ln for ln in capsys.readouterr().out.splitlines()}
    assert "1.38× (dec 1.43; len 3.00; lookup 30%) **<**" in lines["qa"]  # 126 decode tokens in 14 s vs 20 s
    assert "**<**" not in lines["humaneval"] and "(dec 2.00;" in lines["humaneval"]
    assert (tmp_path / "defaults_t.png").exists()


def test_measure_chunk_compiles_new_widths_once_and_refuses_a_differing_output():
    """experiments/common/chunks.measure_chunk on stand-in runners: a chunk of compact rows against
    vanilla's, each prompt width compiled and warmed once per run (a later set reuses it), an output
    that differs from vanilla's stops the run, a repeat that differs from the first too."""
    from types import SimpleNamespace

    from experiments.common.chunks import measure_chunk

    class Runner:
        def __init__(self, shift=0, flaky=False):
            self.shift, self.flaky, self.compiled, self.warmed, self.calls = shift, flaky, [], [], 0

        def prompt_shape(self, prompts):
            return (1, 16 if len(prompts[0]) <= 16 else 32)

        def compile(self, prompts):
            self.compiled.append(self.prompt_shape(prompts))
            return 0.5

        def warmup(self, batches):
            self.warmed.extend(batches)

        def run(self, prompts, key):
            self.calls += 1
            out = [t + self.shift + (self.calls if self.flaky else 0) for t in prompts[0][:3]]
            return SimpleNamespace(output_ids=[out], prefill_s=0.1, decode_s=0.2, stats=None, drafter=None)

    runners = {"vanilla": Runner(), "m": Runner()}
    warmed: set = set()
    chunk, rows = measure_chunk(runners, ("src", 2, 2), [[1, 2, 3], [4] * 20], 2, warmed, config={"x": 1})
    assert chunk["source"] == "src" and chunk["offset"] == 2 and chunk["n"] == 2 and chunk["config"] == {"x": 1}
    assert chunk["compile_s"] == {"vanilla": 1.0, "m": 1.0} and "command" in chunk and "env" in chunk
    assert [r["identical"] for r in chunk["rows"]["m"]] == [True, True] and rows["m"][0]["output_ids"] == [1, 2, 3]
    assert runners["m"].compiled == [(1, 16), (1, 32)]
    chunk, _ = measure_chunk(runners, ("src", 4, 1), [[5] * 9], 1, warmed)  # width 16 again: nothing compiled
    assert chunk["compile_s"] == {"vanilla": 0, "m": 0} and runners["m"].compiled == [(1, 16), (1, 32)]
    with pytest.raises(RuntimeError, match="src m: an output differs from vanilla's"):
        measure_chunk({"vanilla": Runner(), "m": Runner(shift=1)}, ("src", 0, 1), [[1, 2]], 1, set())
    with pytest.raises(RuntimeError, match="gave another output in repeat 1"):
        measure_chunk({"vanilla": Runner(), "m": Runner(flaky=True)}, ("src", 0, 1), [[1, 2]], 2, set())


def test_gpu_check_table_puts_the_plan_beside_the_measurement(tmp_path):
    """gpu_check.sh's table: the planner's vanilla step and chain speedup beside the measured ones, and the
    layer-parallel draft steps against the sequential one of the same context and width."""
    from experiments.gpu.gpu_check_table import predicted_beside_measured

    (tmp_path / "plan_chain.json").write_text(
        json.dumps({"roofline": {"vanilla_step_ms": 2.0, "speedup": 1.8, "tau": 3.1}})
    )
    (tmp_path / "vanilla_target.json").write_text(json.dumps({"summary": {"decode_tok_per_s": 400.0}}))
    (tmp_path / "chain.json").write_text(json.dumps({"summary": {"decode_speedup": 1.5}}))
    rows = [dict(context=4096, width=1, variant="sequential", seconds=0.004),
            dict(context=4096, width=1, variant="attn_only", seconds=0.003)]  # fmt: skip
    (tmp_path / "draft_time_rows.json").write_text(json.dumps(rows))
    text = predicted_beside_measured(tmp_path)
    assert "| vanilla step (ms) | 2.00 | 2.50 |" in text and "| 1.80 (tau 3.10) | 1.50 |" in text
    assert "| attn_only | 4096 | 1 | 3.000 | 0.750 |" in text
