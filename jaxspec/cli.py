"""Command line: `python -m jaxspec generate ...` and `python -m jaxspec bench ...` (see README)."""
from __future__ import annotations

import argparse
import sys


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="registry name (see `python -m conversion.assets --list`), "
                                                    "a .gguf file or a Hugging Face model directory")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--chat", action="store_true", help="wrap each prompt in the tokenizer's chat template")
    p.add_argument("--mesh", default=None, help="device mesh, e.g. tp=2 (tensor parallel over 2 devices)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--limit", type=int, default=None, help="use the first N prompts of --prompts")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m jaxspec", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate text for one or more prompts")
    _common(g)
    g.add_argument("--prompt", action="append", default=[], help="prompt text (repeat for a batch)")
    g.add_argument("--prompts", default=None, help="JSONL file, humaneval or spec-bench[:CATEGORY]")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-stream", action="store_true",
                   help="one on-device loop (no progress bar, no host sync per token)")

    b = sub.add_parser("bench", help="benchmark a prompt set, write JSON")
    _common(b)
    b.add_argument("--prompts", required=True, help="JSONL file, humaneval or spec-bench[:CATEGORY]")
    b.add_argument("--json", required=True, help="output file")
    b.add_argument("--hf-baseline", action="store_true", help="also time HF torch generate on the same prompts")
    b.add_argument("--measure-bandwidth", action="store_true",
                   help="also measure the machine's memory-read bandwidth and report the decode bound")
    return ap


def cmd_generate(args) -> int:
    import jax

    from conversion.loader import load_model
    from conversion.tokenizer import encode_prompt, eos_ids
    from jaxspec.decode import bucket
    from jaxspec.prompts import load_prompts
    from jaxspec.runner import VanillaRunner
    from jaxspec.sampling import SamplingConfig
    from jaxspec.sharding import parse_mesh

    texts = list(args.prompt)
    if args.prompts:
        texts += [p.text for p in load_prompts(args.prompts, args.limit if args.limit is not None else 1)]
    if not texts:
        raise ValueError("give --prompt TEXT or --prompts SOURCE")
    sampling = SamplingConfig(args.temperature, args.top_k, args.top_p)
    m = load_model(args.model, mesh=parse_mesh(args.mesh), dtype=args.dtype)
    print(f"loaded {args.model} ({m.cfg.arch}, {m.cfg.num_layers} layers) in {m.load_s:.1f}s"
          f"{' from checkpoint' if m.from_checkpoint else ''}", file=sys.stderr)
    ids = [encode_prompt(m.tokenizer, t, chat=args.chat) for t in texts]
    max_len = bucket(max(map(len, ids)) + args.max_new_tokens, 64)
    runner = VanillaRunner(m.params, m.cfg, max_new_tokens=args.max_new_tokens, max_len=max_len,
                           sampling=sampling, eos_ids=eos_ids(m.tokenizer, m.cfg), plan=m.plan)
    key = jax.random.key(args.seed)
    if args.no_stream:
        res = runner.run(ids, key)
    else:
        from tqdm import tqdm
        with tqdm(total=args.max_new_tokens, unit="tok", file=sys.stderr, desc="decode") as bar:
            for out, res in runner.stream(ids, key):
                bar.update(max(map(len, out)) - bar.n)
    for i, out in enumerate(res.output_ids):
        if len(ids) > 1:
            print(f"--- prompt {i} ---")
        print(m.tokenizer.decode(out, skip_special_tokens=True))
    steps = sum(max(len(o) - 1, 0) for o in res.output_ids)
    print(f"\n{res.new_tokens} new tokens | compile {res.compile_s:.1f}s | prefill {res.prefill_s * 1e3:.0f} ms | "
          f"decode {steps / res.decode_s if res.decode_s else float('nan'):.2f} tok/s | "
          f"end-to-end {res.new_tokens / res.wall_s:.2f} tok/s (compile excluded)", file=sys.stderr)
    return 0


def cmd_bench(args) -> int:
    from jaxspec.bench import run_bench, write_json
    from jaxspec.sharding import parse_mesh

    result = run_bench(args.model, args.prompts, max_new_tokens=args.max_new_tokens, limit=args.limit,
                       chat=args.chat, mesh=parse_mesh(args.mesh), dtype=args.dtype, hf_baseline=args.hf_baseline,
                       measure_bandwidth=args.measure_bandwidth, log=lambda s: print(s, file=sys.stderr))
    s = result["summary"]
    line = f"{s['method']}: {s['tok_per_s']:.2f} tok/s, compile {s['compile_s']:.1f}s, prefill {s['prefill_s']:.2f}s"
    if "hf_tok_per_s" in s:
        line += (f" | HF {s['hf_tok_per_s']:.2f} tok/s, speedup {s['speedup_vs_hf']:.2f}x, "
                 f"identical {s['hf_identical']}/{s['total']['prompts']}")
    print(line)
    print(f"wrote {write_json(result, args.json)}")
    return 0


def main(argv=None) -> int:
    from conversion.assets import AssetError
    from conversion.mapping import ConversionError

    args = build_parser().parse_args(argv)
    try:
        return {"generate": cmd_generate, "bench": cmd_bench}[args.command](args)
    except (ValueError, FileNotFoundError, AssetError, ConversionError) as e:  # user errors: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
