"""Make a hot-vocabulary frequency file (jaxspec/speculative/hot_vocab.py): count the tokens the *target*
generates (greedy) on calibration prompts held out from the experiments' sets, and write the counts with
the tokenizer's vocabulary hash to jaxspec/data/hot_vocab/<target>.json, where `--draft-vocab N` finds it.

    python -m jaxspec.hot_vocab_file --model qwen2.5-coder-1.5b-instruct

Calibration prompts: Spec-Bench's five 80-prompt categories from prompt `--offset` on (the experiments use
each category's first 10) and HumanEval from problem `--humaneval-offset` on (they use the first 20). The
eight 10-prompt MT-bench categories have no held-out prompts: they are not in the calibration text.
The prior (the order among tokens the target never generated there): token counts of the raw text of
every held-out prompt (Spec-Bench's five categories from prompt 10, HumanEval from problem 20).
`--soft MODEL` adds soft counts (the order among tokens the raw counts tie on, and among the many they
never saw): MODEL's expected next-token counts over the same raw text, teacher-forced (the draft: it is
the model whose head is trimmed; 48 min on this CPU for the 0.5B over 127k tokens at `--soft-max-tokens`
1024, beside a generation run). `--counts-from FILE` reuses an earlier file's generated counts (and its source) and
recomputes the prior (and the soft counts, with `--soft`).

The shipped jaxspec/data/hot_vocab/qwen2.5-coder-1.5b-instruct.json was made by
experiments/hot_vocab/hot_vocab_calibration.py (`generate`, `soft`, `write --soft`): this module's counts on 56
prompts plus 12.5k tokens the 1.5B generated on 160 other held-out prompts, the raw-text prior and the
0.5B's soft counts (the README's hot-vocabulary section measures each step)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

CATEGORIES = ("translation", "summarization", "qa", "math_reasoning", "rag")
PRIOR = "raw text of the held-out prompts: Spec-Bench's five 80-prompt categories from prompt 10, HumanEval from 20"
SOFT_KEEP = 65536 + 8192  # soft counts written (the experiments' largest head is 64K); ranks beyond: id order


def prior_texts() -> list[str]:
    """The raw text of every prompt the experiments do not use."""
    from jaxspec.prompts import load_prompts

    held_out = [q for c in CATEGORIES for q in load_prompts(f"spec-bench:{c}", None, 10)]
    return [q.text for q in held_out + load_prompts("humaneval", None, 20)]


def calibration_prompts(per_category: int, offset: int, humaneval: int, humaneval_offset: int):
    from jaxspec.prompts import load_prompts

    out = []
    for c in CATEGORIES:
        out += load_prompts(f"spec-bench:{c}", per_category, offset)
    return out + load_prompts("humaneval", humaneval, humaneval_offset)


def prior_counts(tokenizer) -> dict[int, int]:
    """Token counts of the raw text of every prompt the experiments do not use."""
    from jaxspec.speculative.hot_vocab import count_tokens

    return count_tokens(tokenizer.encode(t) for t in prior_texts())


def expected_counts(m, seqs: list[list[int]], positions_per_call: int = 2048, log=print):
    """f64[V]: the loaded model `m`'s next-token probabilities at every position of `seqs` (teacher-forced),
    summed — the tokens the text makes likely, each with a weight, where raw counts only see the tokens
    it contains. Rows of similar length are batched (right-padded to a multiple of 64; padding is causal-
    invisible to the real positions and masked out of the sum), at most `positions_per_call` a call."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxspec.cache import init_cache
    from jaxspec.model import forward

    cfg = m.cfg

    @jax.jit
    def expected(params, tokens, lens):  # tokens i32[B, T] right-padded; lens i32[B] real tokens per row
        B, T = tokens.shape
        logits = forward(params, tokens, init_cache(cfg, B, T), cfg, window=T)[0]
        p = jax.nn.softmax(logits.astype(jnp.float32), -1)  # f32[B, T, V]
        return jnp.sum(jnp.where((jnp.arange(T) < lens[:, None])[..., None], p, 0.0), (0, 1))

    pad = lambda n: -(-n // 64) * 64  # noqa: E731
    total, t0, done = np.zeros(cfg.vocab_size, np.float64), time.perf_counter(), 0
    order = [i for i in sorted(range(len(seqs)), key=lambda i: len(seqs[i])) if seqs[i]]
    i = 0
    while i < len(order):
        T = pad(len(seqs[order[i]]))
        rows = [j for j in order[i : i + max(1, positions_per_call // T)] if pad(len(seqs[j])) == T]
        toks = np.zeros((len(rows), T), np.int32)
        for r, j in enumerate(rows):
            toks[r, : len(seqs[j])] = seqs[j]
        lens = np.asarray([len(seqs[j]) for j in rows], np.int32)
        total += np.asarray(expected(m.params, jnp.asarray(toks), jnp.asarray(lens)), np.float64)
        done, i = done + int(lens.sum()), i + len(rows)
        log(f"  {i}/{len(order)} texts, {done} tokens in {time.perf_counter() - t0:.0f}s")
    return total


def prior_expected_counts(m, max_tokens: int, log=print):
    """(f64[V], tokens read): the loaded model `m`'s expected counts over the prior's raw text, each text
    cut to `max_tokens` (`m` shares the target's tokenizer: the caller checks)."""
    seqs = [m.tokenizer.encode(t)[:max_tokens] for t in prior_texts()]
    return expected_counts(m, seqs, log=log), sum(map(len, seqs))


def soft_prior(expected, model: str, tokens: int, max_tokens: int, keep: int = SOFT_KEEP) -> tuple[dict, dict]:
    """(token → expected count for the `keep` largest, the file's source record) from `expected` f[V]."""
    import numpy as np

    top = np.argsort(-np.asarray(expected, np.float64), kind="stable")[:keep]
    source = {
        "model": model,
        "tokens": int(tokens),
        "max_tokens_per_text": int(max_tokens),
        "kept": keep,
        "what": "expected next-token counts (softmax summed, teacher-forced) over the prior's raw text",
    }
    return {int(t): float(expected[t]) for t in top if expected[t] > 0}, source


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
        rows = order[b : b + batch]
        group = [ids[i] for i in rows]
        runner = make_runner(
            m,
            None,
            None,
            max_new_tokens=max_new_tokens,
            eos_ids=eos,
            max_len=cache_slots(max(map(len, group)) + max_new_tokens),
        )
        t0 = time.perf_counter()
        res = runner.run(group, jax.random.key(0))
        for i, o in zip(rows, res.output_ids):
            outs[i] = list(o)
        log(
            f"  {b + len(rows)}/{len(ids)} prompts ({max(map(len, group))} tokens longest) in "
            f"{time.perf_counter() - t0:.0f}s"
        )
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
    p.add_argument("--out", default=None, help="default jaxspec/data/hot_vocab/<model>.json (package data)")
    p.add_argument("--counts-from", default=None, help="reuse this file's generated counts; recompute the prior")
    p.add_argument(
        "--soft",
        default=None,
        metavar="MODEL",
        help="add MODEL's expected counts over the prior's text (the draft; same tokenizer)",
    )
    p.add_argument("--soft-max-tokens", type=int, default=1024, help="per prompt text, with --soft")
    args = p.parse_args(argv)
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    from conversion.loader import load_model_tokenizer
    from jaxspec.speculative.hot_vocab import vocab_hash

    if args.soft and vocab_hash(load_model_tokenizer(args.soft)) != vocab_hash(load_model_tokenizer(args.model)):
        p.error(f"--soft {args.soft}: its tokenizer is not {args.model}'s; its expected counts would rank other tokens")

    def soft(source: dict):
        if not args.soft:
            return None
        e, tokens = prior_expected_counts(load_model(args.soft), args.soft_max_tokens, log=log)
        counts, source["soft"] = soft_prior(e, args.soft, tokens, args.soft_max_tokens)
        return counts

    import json

    from conversion.loader import load_model
    from jaxspec.prompts import encode
    from jaxspec.speculative.hot_vocab import ASSET_DIR, count_tokens, load_hot_vocab, write_frequencies

    out = Path(args.out) if args.out else ASSET_DIR / f"{args.model}.json"
    if args.counts_from:
        tok = load_model_tokenizer(args.model)
        load_hot_vocab(args.counts_from, 1, tokenizer=tok)  # made for this tokenizer
        old = json.loads(Path(args.counts_from).read_text())
        source = old["source"] | {"prior": PRIOR}
        source.pop("soft", None)
        doc = write_frequencies(
            out, {t: n for t, n in old["counts"]}, tok, old["vocab_size"], source, prior_counts(tok), soft(source)
        )
        print(
            f"wrote {out}: {doc['tokens_counted']} tokens ({args.counts_from}'s), prior of "
            f"{sum(n for _, n in doc['prior_counts'])} raw tokens",
            file=sys.stderr,
        )
        return 0
    m = load_model(args.model)
    prompts = calibration_prompts(args.per_category, args.offset, args.humaneval, args.humaneval_offset)
    ids = [encode(m.tokenizer, q) for q in prompts]
    print(f"{args.model}: {len(prompts)} calibration prompts, {args.max_new_tokens} new tokens each", file=sys.stderr)
    outs = generate(m, ids, args.max_new_tokens, args.batch, log=log)
    counts = count_tokens(outs)
    source = {
        "target": args.model,
        "generation": f"greedy, {args.max_new_tokens} new tokens, cut at EOS",
        "prompts": {f"spec-bench:{c}": [args.offset, args.offset + args.per_category] for c in CATEGORIES}
        | {"humaneval": [args.humaneval_offset, args.humaneval_offset + args.humaneval]},
        "command": "python -m jaxspec.hot_vocab_file " + " ".join(argv if argv is not None else sys.argv[1:]),
        "prior": PRIOR,
    }
    doc = write_frequencies(out, counts, m.tokenizer, m.cfg.vocab_size, source, prior_counts(m.tokenizer), soft(source))
    print(f"wrote {out}: {doc['tokens_counted']} tokens, {doc['distinct']} distinct", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
