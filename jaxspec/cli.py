"""Command line: `python -m jaxspec generate ...` and `python -m jaxspec bench ...` (see README)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from jaxspec import distributed
from jaxspec.cli_methods import add_method_flags, draft_replicated, numerics_of, resolve


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        help="registry name (see `python -m conversion.assets --list`), a .gguf file or a Hugging Face model directory",
    )
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--chat", action="store_true", help="wrap each prompt in the tokenizer's chat template")
    p.add_argument("--mesh", default=None, help="device mesh, e.g. tp=2 (tensor parallel over 2 devices)")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="params and activations (norm statistics, softmax, RoPE and logits stay f32)",
    )
    p.add_argument(
        "--cache-dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="the KV cache's dtype (default --dtype)",
    )
    p.add_argument(
        "--precision",
        default="highest",
        choices=["highest", "default"],
        help="matmul precision: highest (parity: exact f32 products) or default (the backend's fast "
        "mode: TF32 on recent NVIDIA GPUs, bf16 passes on TPU; no difference on CPU)",
    )
    p.add_argument(
        "--attention",
        default="auto",
        choices=["auto", "einsum", "fused"],
        help="attention's products: einsum (ours), fused (jax.nn.dot_product_attention: cuDNN flash "
        "attention on GPU where it applies) or auto (fused off CPU with --precision default)",
    )
    p.add_argument("--limit", type=int, default=None, help="use the first N prompts of --prompts")
    p.add_argument(
        "--draft",
        default=None,
        help="draft model (registry name, .gguf or HF directory) for chain, tree, easyspec and cascade",
    )
    p.add_argument(
        "--draft-sharding",
        default=None,
        choices=["tp", "replicated"],
        help="on a --mesh: the draft "
        "tensor-parallel by its own plan (default for chain/tree) or whole on every device (no "
        "collectives in a draft step; EasySpec's draft always is)",
    )
    add_method_flags(p)
    h = p.add_argument_group("multi-host (one process per host; or JAXSPEC_COORDINATOR / _NUM_PROCESSES / _PROCESS_ID)")
    h.add_argument("--coordinator", default=None, help="HOST:PORT of process 0's coordinator (jax.distributed)")
    h.add_argument("--num-processes", type=int, default=None)
    h.add_argument("--process-id", type=int, default=None)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--compare-vanilla",
        action="store_true",
        help="also run jaxspec vanilla decoding on the same prompts and report the speedup",
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m jaxspec", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate text for one or more prompts")
    _common(g)
    g.add_argument("--prompt", action="append", default=[], help="prompt text (repeat for a batch)")
    g.add_argument("--prompts", default=None, help="JSONL file, humaneval or spec-bench[:CATEGORY]")
    g.add_argument(
        "--no-stream", action="store_true", help="one on-device loop (no progress bar, no host sync per token)"
    )

    b = sub.add_parser("bench", help="benchmark a prompt set, write JSON")
    _common(b)
    b.add_argument("--prompts", required=True, help="JSONL file, humaneval or spec-bench[:CATEGORY]")
    b.add_argument("--json", required=True, help="output file")
    b.add_argument(
        "--hf-baseline",
        action="store_true",
        help="also time HF torch generate on the same prompts (assisted generation with the draft for chain/tree)",
    )
    b.add_argument(
        "--timing",
        action="store_true",
        help="speculative: also run in timing mode (one sync per round) to split drafting / verification",
    )
    b.add_argument(
        "--measure-bandwidth",
        action="store_true",
        help="also measure the machine's memory-read bandwidth and report the decode bound",
    )
    from jaxspec.plan_cli import add_parser

    add_parser(sub)
    return ap


def cmd_generate(args) -> int:
    import jax

    from conversion.loader import load_model
    from conversion.tokenizer import eos_ids
    from jaxspec.prompts import Prompt, encode, load_prompts
    from jaxspec.sampling import SamplingConfig
    from jaxspec.sharding import parse_mesh
    from jaxspec.speculative import check_vocab, make_runner
    from jaxspec.speculative.runner import runner_slots

    prompts = [Prompt(str(i), t) for i, t in enumerate(args.prompt)]
    if args.prompts:
        prompts += load_prompts(args.prompts, args.limit if args.limit is not None else 1)
    if not prompts:
        raise ValueError("give --prompt TEXT or --prompts SOURCE")
    r = resolve(args)
    method = r.method
    sampling = SamplingConfig(args.temperature, args.top_k, args.top_p)
    mesh = parse_mesh(args.mesh)
    numerics = numerics_of(args)
    m = load_model(args.model, mesh=mesh, **numerics)
    print(
        f"loaded {args.model} ({m.cfg.arch}, {m.cfg.num_layers} layers) in {m.load_s:.1f}s"
        f"{' from checkpoint' if m.from_checkpoint else ''}",
        file=sys.stderr,
    )
    for note in m.plan.notes if m.plan else ():  # what the mesh could not split
        print(f"sharding: {note}", file=sys.stderr)
    d = None
    if method is not None and args.draft:  # cli_methods.check: given exactly where a method takes one
        d = load_model(args.draft, mesh=mesh, **numerics, replicated=draft_replicated(args))
        check_vocab(m.cfg, d.cfg, m.tokenizer, d.tokenizer)
        print(f"loaded draft {args.draft} ({d.cfg.num_layers} layers) in {d.load_s:.1f}s", file=sys.stderr)
    ids = [encode(m.tokenizer, p, args.chat) for p in prompts]
    max_len = runner_slots(max(map(len, ids)), args.max_new_tokens, method)  # vanilla's too: the same cache
    kw = dict(
        max_new_tokens=args.max_new_tokens, max_len=max_len, sampling=sampling, eos_ids=eos_ids(m.tokenizer, m.cfg)
    )
    runner = make_runner(m, d, method, **kw, drafter=r.drafter, measure_costs=True)  # the CLI's default: DEL times
    if r.drafter is not None and r.drafter.writes_target_cache and args.method != "cascade":  # a self-drafter
        e = runner.spec.drafter.describe()
        which = (
            f"the first {e['exit_layer']}"
            if "exit_layer" in e
            else f"the first E (chosen every round among {e['exits']})"
        )
        print(f"{args.method}: {which} of {e['layers']} layers draft, in the model's own KV cache", file=sys.stderr)
        if isinstance(e.get("cost"), dict):
            c = e["cost"]
            print(
                f"del: round cost measured on this machine (plain step {c['step_ms']:.1f} ms): "
                f"exits that can beat plain decoding "
                f"{c['exits'] or 'none (plain decoding throughout)'} of {c['measured']}",
                file=sys.stderr,
            )
    if args.method == "cascade":
        e = runner.spec.drafter.describe()
        model = f"the model's first {e['exit_layer']} layers" if "exit_layer" in e else "the draft model"
        how = (
            "the draft model extends every lookup proposal"
            if e["mode"] == "extend"
            else f"a lookup of >= {e['min_match']} tokens serves the round, else {model}"
        )
        print(
            f"cascade: prompt lookup of {e['max_ngram']}- down to {e['min_ngram']}-grams in front of {model} "
            f"({how}), {method.shape.depth} tokens a round",
            file=sys.stderr,
        )
    if args.method == "ngram":
        e = runner.spec.drafter.describe()
        print(
            f"ngram: prompt lookup of {e['max_ngram']}- down to {e['min_ngram']}-grams, up to {method.shape.depth} "
            f"tokens a round, no draft model",
            file=sys.stderr,
        )
    if args.method == "easyspec":
        e = runner.spec.drafter.describe()
        print(
            f"easyspec: groups {e['partition_text']}, {e['policy']}, calibration {e['calibration']}, {e['path']}",
            file=sys.stderr,
        )
    if (v := getattr(getattr(runner.spec, "drafter", None), "vocab", None)) is not None:  # vanilla: no drafter
        print(f"draft head: {v.size} of {v.vocab_size} tokens ({v.file})", file=sys.stderr)
    key = jax.random.key(args.seed)
    if args.compare_vanilla:  # a fair comparison: both warmed up, both one on-device loop (no per-round sync)
        compile_s = runner.compile(ids)
        runner.warmup([ids])
        res = runner.run(ids, key)
        res.compile_s = compile_s
    elif args.no_stream:
        res = runner.run(ids, key)
    else:
        from tqdm import tqdm

        with tqdm(total=args.max_new_tokens, unit="tok", file=sys.stderr, desc=runner.method) as bar:
            for out, res in runner.stream(ids, key):
                bar.update(max(map(len, out)) - bar.n)
    for i, out in enumerate(res.output_ids):
        if len(ids) > 1:
            print(f"--- prompt {i} ---")
        print(m.tokenizer.decode(out, skip_special_tokens=True))
    print(f"\n{runner.method}: {_timing_line(res)}", file=sys.stderr)
    if res.stats is not None:
        s = res.stats
        rate = "no drafts" if s["acceptance_rate"] is None else f"{s['acceptance_rate']:.1%}"  # DEL may never draft
        print(
            f"acceptance: {s['accepted']}/{s['drafted']} drafts accepted ({rate}), mean accepted "
            f"length {s['mean_accepted_length']:.2f} tokens/round over {s['rounds']} rounds; per depth "
            f"{' '.join(f'{x:.2f}' for x in s['per_position'])}",
            file=sys.stderr,
        )
        if res.drafter:
            print(f"{args.method}: {_report_line(res.drafter)}", file=sys.stderr)
        if res.draft_s is not None:
            print(f"time split: drafting {res.draft_s:.2f}s, verification {res.verify_s:.2f}s", file=sys.stderr)
    if args.compare_vanilla and method is not None:
        van = make_runner(m, None, None, **kw)
        compile_s = van.compile(ids)  # compile and first run outside the timing, as for the speculative run
        van.warmup([ids])
        base = van.run(ids, key)
        base.compile_s = compile_s
        same = sum(a == b for a, b in zip(base.output_ids, res.output_ids))
        print(f"vanilla: {_timing_line(base)}", file=sys.stderr)
        print(
            f"speedup {base.wall_s / res.wall_s * res.new_tokens / base.new_tokens:.2f}x end-to-end "
            f"(compile excluded); identical outputs {same}/{len(ids)}",
            file=sys.stderr,
        )
    return 0


def _report_line(report: dict) -> str:
    """DEL's traces in one line: how often each exit was in effect, plain steps, mean τ."""
    from collections import Counter

    exits = Counter(report["exit_layer"])
    taus = [t for t in report["tau"] if t == t]
    rounds = sum(exits.values())
    shares = ", ".join(f"E{e}: {n / rounds:.0%}" if e else f"plain: {n / rounds:.0%}" for e, n in sorted(exits.items()))
    return f"exit in effect over {rounds} rounds: {shares}; mean τ {sum(taus) / max(len(taus), 1):.2f}"


def _timing_line(res) -> str:
    steps = sum(max(len(o) - 1, 0) for o in res.output_ids)
    return (
        f"{res.new_tokens} new tokens | compile {res.compile_s:.1f}s | prefill {res.prefill_s * 1e3:.0f} ms | "
        f"decode {steps / res.decode_s if res.decode_s else float('nan'):.2f} tok/s | "
        f"end-to-end {res.new_tokens / res.wall_s:.2f} tok/s"
    )


def cmd_bench(args) -> int:
    from jaxspec.bench import run_bench, write_json
    from jaxspec.sampling import SamplingConfig
    from jaxspec.sharding import parse_mesh

    r = resolve(args)
    result = run_bench(
        args.model,
        args.prompts,
        max_new_tokens=args.max_new_tokens,
        limit=args.limit,
        chat=args.chat,
        mesh=parse_mesh(args.mesh),
        method=r.method,
        **numerics_of(args),
        draft=args.draft,
        draft_replicated=draft_replicated(args),
        sampling=SamplingConfig(args.temperature, args.top_k, args.top_p),
        seed=args.seed,
        compare_vanilla=args.compare_vanilla,
        hf_baseline=args.hf_baseline,
        measure_bandwidth=args.measure_bandwidth,
        timing=args.timing,
        drafter=r.drafter,
        log=lambda s: print(s, file=sys.stderr),
    )
    s = result["summary"]
    line = f"{s['method']}: {s['tok_per_s']:.2f} tok/s, compile {s['compile_s']:.1f}s, prefill {s['prefill_s']:.2f}s"
    if "mean_accepted_length" in s:
        line += f" | mean accepted length {s['mean_accepted_length']:.2f}, acceptance {s['acceptance_rate'] or 0:.1%}"
        if "analytic_speedup" in s:
            line += f", analytic {s['analytic_speedup']:.2f}x"
    if "exit_layers" in s:
        e = s["exit_layers"]
        line += (
            f" | exits {', '.join(f'{k}: {v:.0%}' for k, v in e['share'].items())} (0 = plain step), "
            f"mean τ {e['mean_tau'] or float('nan'):.2f}"
        )
    if "vanilla_tok_per_s" in s:
        line += (
            f" | vanilla {s['vanilla_tok_per_s']:.2f} tok/s, speedup {s['speedup']:.2f}x "
            f"(decode {s['decode_speedup']:.2f}x), identical {s['vanilla_identical']}/{s['total']['prompts']}"
        )
    if "hf_tok_per_s" in s:
        line += (
            f" | HF {s['hf_method']} {s['hf_tok_per_s']:.2f} tok/s, speedup {s['speedup_vs_hf']:.2f}x, "
            f"identical {s['hf_identical']}/{s['total']['prompts']}"
        )
    print(line)
    if distributed.is_primary():
        print(f"wrote {write_json(result, args.json)}")
    return 0


class _ToStderr(logging.Handler):
    """The library's log lines (e.g. where DEL's measured round cost is kept) on the current stderr."""

    def emit(self, record):
        print(self.format(record), file=sys.stderr)


def main(argv=None) -> int:
    from conversion.assets import AssetError
    from conversion.mapping import ConversionError

    args = build_parser().parse_args(argv)
    lib_log = logging.getLogger("jaxspec")
    if not any(isinstance(h, _ToStderr) for h in lib_log.handlers):
        lib_log.addHandler(_ToStderr())
        lib_log.setLevel(logging.INFO)
    try:
        if args.command == "plan":  # compile-only: no weights, no processes to join
            from jaxspec.plan_cli import cmd_plan

            return cmd_plan(args)
        if (
            distributed.initialize(args.coordinator, args.num_processes, args.process_id)
            and not distributed.is_primary()
        ):  # every process runs the same program; process 0 speaks
            sys.stdout = sys.stderr = open(os.devnull, "w")
        return {"generate": cmd_generate, "bench": cmd_bench}[args.command](args)
    except (
        ValueError,
        FileNotFoundError,
        AssetError,
        ConversionError,
    ) as e:  # user errors: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
