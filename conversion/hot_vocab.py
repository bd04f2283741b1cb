"""Make a hot-vocabulary frequency file (jaxspec/speculative/hot_vocab.py): count the tokens the *target*
generates (greedy) on calibration prompts held out from the experiments' sets, and write the counts with
the tokenizer's vocabulary hash to conversion/hot_vocab/<target>.json, where `--draft-vocab N` finds it.

    python -m conversion.hot_vocab --model qwen2.5-coder-1.5b-instruct

Calibration prompts: Spec-Bench's five 80-prompt categories from prompt `--offset` on (the experiments use
each category's first 10) and HumanEval from problem `--humaneval-offset` on (they use the first 20). The
eight 10-prompt MT-bench categories have no held-out prompts: they are not in the calibration text.
The prior (the order among tokens the target never generated there): token counts of the raw text of
every held-out prompt (Spec-Bench's five categories from prompt 10, HumanEval from problem 20).
`--counts-from FILE` reuses an earlier file's generated counts (and its source) and recomputes the prior."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

CATEGORIES = ("translation", "summarization", "qa", "math_reasoning", "rag")
PRIOR = "raw text of the held-out prompts: Spec-Bench's five 80-prompt categories from prompt 10, HumanEval from 20"


def calibration_prompts(per_category: int, offset: int, humaneval: int, humaneval_offset: int):
    from jaxspec.prompts import load_prompts
    out = []
    for c in CATEGORIES:
        out += load_prompts(f"spec-bench:{c}", per_category, offset)
    return out + load_prompts("humaneval", humaneval, humaneval_offset)


def prior_counts(tokenizer) -> dict[int, int]:
    """Token counts of the raw text of every prompt the experiments do not use."""
    from jaxspec.prompts import load_prompts
    from jaxspec.speculative.hot_vocab import count_tokens
    held_out = [q for c in CATEGORIES for q in load_prompts(f"spec-bench:{c}", None, 10)]
    return count_tokens(tokenizer.encode(q.text) for q in held_out + load_prompts("humaneval", None, 20))


def generate(m, ids, max_new_tokens: int, batch: int, log=print) -> list[list[int]]:
    """Greedy continuations of `ids` by the loaded model `m`, `batch` prompts at a time (similar lengths
    together, so padding stays small), cut at the first EOS."""
    import jax

    from conversion.tokenizer import eos_ids
    from jaxspec.decode import cache_slots
    from jaxspec.speculative import make_runner

    eos = eos_ids(m.tokenizer, m.cfg)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    outs: list[list[int] | None] = [None] * len(ids)
    for b in range(0, len(order), batch):
        rows = order[b:b + batch]
        group = [ids[i] for i in rows]
        runner = make_runner(m, None, None, max_new_tokens=max_new_tokens, eos_ids=eos,
                             max_len=cache_slots(max(map(len, group)) + max_new_tokens))
        t0 = time.perf_counter()
        res = runner.run(group, jax.random.key(0))
        for i, o in zip(rows, res.output_ids):
            outs[i] = list(o)
        log(f"  {b + len(rows)}/{len(ids)} prompts ({max(map(len, group))} tokens longest) in "
            f"{time.perf_counter() - t0:.0f}s")
    return outs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the target whose generated text is counted")
    p.add_argument("--per-category", type=int, default=8)
    p.add_argument("--offset", type=int, default=40, help="first Spec-Bench prompt per category (held out)")
    p.add_argument("--humaneval", type=int, default=16)
    p.add_argument("--humaneval-offset", type=int, default=100)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--out", default=None, help="default conversion/hot_vocab/<model>.json")
    p.add_argument("--counts-from", default=None, help="reuse this file's generated counts; recompute the prior")
    args = p.parse_args(argv)

    import json

    from conversion.loader import load_model, load_model_tokenizer
    from jaxspec.prompts import encode
    from jaxspec.speculative.hot_vocab import ASSET_DIR, count_tokens, load_hot_vocab, write_frequencies

    out = Path(args.out) if args.out else ASSET_DIR / f"{args.model}.json"
    if args.counts_from:
        tok = load_model_tokenizer(args.model)
        load_hot_vocab(args.counts_from, 1, tokenizer=tok)  # made for this tokenizer
        old = json.loads(Path(args.counts_from).read_text())
        doc = write_frequencies(out, {t: n for t, n in old["counts"]}, tok, old["vocab_size"],
                                old["source"] | {"prior": PRIOR}, prior_counts(tok))
        print(f"wrote {out}: {doc['tokens_counted']} tokens ({args.counts_from}'s), prior of "
              f"{sum(n for _, n in doc['prior_counts'])} raw tokens", file=sys.stderr)
        return 0
    m = load_model(args.model)
    prompts = calibration_prompts(args.per_category, args.offset, args.humaneval, args.humaneval_offset)
    ids = [encode(m.tokenizer, q) for q in prompts]
    print(f"{args.model}: {len(prompts)} calibration prompts, {args.max_new_tokens} new tokens each", file=sys.stderr)
    outs = generate(m, ids, args.max_new_tokens, args.batch, log=lambda s: print(s, file=sys.stderr))
    counts = count_tokens(outs)
    source = {"target": args.model, "generation": f"greedy, {args.max_new_tokens} new tokens, cut at EOS",
              "prompts": {f"spec-bench:{c}": [args.offset, args.offset + args.per_category] for c in CATEGORIES}
              | {"humaneval": [args.humaneval_offset, args.humaneval_offset + args.humaneval]},
              "command": "python -m conversion.hot_vocab " + " ".join(argv if argv is not None else sys.argv[1:]),
              "prior": PRIOR}
    doc = write_frequencies(out, counts, m.tokenizer, m.cfg.vocab_size, source, prior_counts(m.tokenizer))
    print(f"wrote {out}: {doc['tokens_counted']} tokens, {doc['distinct']} distinct", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
