"""Cheap drafts against the draft-model chain (issue 16 §3): the 1.5B target, greedy, on one CPU device —
vanilla, the 0.5B draft model's chain, prompt lookup (NGram), the cascade (lookup in front of the 0.5B:
switch at `--min-match`, and extend), each optionally with the 0.5B's head trimmed to `--vocab` hot tokens;
every method on the same prompts in one process, interleaved prompt by prompt, best of `--repeats`
(interleaved.py), compile and warm-up excluded, prefill and decode apart. `--hf` adds HF's prompt lookup
(`prompt_lookup_num_tokens` = k, `max_matching_ngram_size` = max n) and assisted generation (the 0.5B) on
the same prompts (torch, timed once per prompt after a warm-up).

    python experiments/cheap_drafts.py run --sets humaneval:4 spec-bench:summarization:3 --tag _small
    python experiments/cheap_drafts.py plot --tag _small

Writes results/cheap_drafts<tag>.json (+ .png: end-to-end speedup per set and method)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TARGET, DRAFT = "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"


def log(s: str) -> None:
    print(s, file=sys.stderr, flush=True)


def _drafters(args, d_tok):
    """(name, needs the draft model, drafter) per method; None: DraftModel with the full head."""
    from jaxspec.speculative import Cascade, DraftModel, NGram
    from jaxspec.speculative.hot_vocab import find_file, load_hot_vocab
    vocab = load_hot_vocab(find_file(d_tok), args.vocab, tokenizer=d_tok) if args.vocab else None
    ng = NGram(args.max_ngram, args.min_ngram)
    out = [("chain", True, None), ("ngram", False, ng),
           (f"cascade-m{args.min_match}", True, Cascade(ng, min_match=args.min_match)),
           ("cascade-extend", True, Cascade(ng, extend=True))]
    if vocab is not None:
        out += [(f"chain-V{args.vocab}", True, DraftModel(vocab=vocab)),
                (f"cascade-m{args.min_match}-V{args.vocab}", True,
                 Cascade(ng, DraftModel(vocab=vocab), min_match=args.min_match))]
    return out


def _stages(rows: list[dict]) -> dict | None:
    """A cascade's stage counts pooled over the set (bench's own pooling); None for other methods."""
    from jaxspec.bench import _stage_shares
    return _stage_shares(rows) if rows and "cascade" in rows[0].get("drafter", {}) else None


def cmd_run(args) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import interleaved

    from conversion.loader import load_model
    from conversion.tokenizer import eos_ids
    from jaxspec.bench import environment, write_json
    from jaxspec.decode import cache_slots
    from jaxspec.prompts import encode, load_prompts
    from jaxspec.speculative import chain, make_runner

    t, d = load_model(TARGET), load_model(DRAFT)
    eos, N, meth = eos_ids(t.tokenizer, t.cfg), args.max_new_tokens, chain(args.k)
    path = RESULTS / f"cheap_drafts{args.tag}.json"
    out = {"target": TARGET, "draft": DRAFT, "k": args.k, "max_ngram": args.max_ngram, "min_ngram": args.min_ngram,
           "min_match": args.min_match, "vocab": args.vocab, "max_new_tokens": N, "repeats": args.repeats,
           "measurement": "interleaved, best of repeats per prompt and method", "sets": {}, "env": environment()}
    for spec in args.sets:
        source, limit = spec.rsplit(":", 1)
        prompts = load_prompts(source, int(limit))
        ids = [encode(t.tokenizer, p) for p in prompts]
        kw = dict(max_new_tokens=N, eos_ids=eos, max_len=cache_slots(max(map(len, ids)) + N + meth.shape.nodes + 1))
        runners = {"vanilla": make_runner(t, None, None, **kw)}
        for name, with_draft, drafter in _drafters(args, d.tokenizer):
            runners[name] = make_runner(t, d if with_draft else None, meth, drafter=drafter, **kw)
        t0 = time.perf_counter()
        compile_s = interleaved.prepare(runners, ids)
        log(f"[{spec}] {len(ids)} prompts, compiled {list(runners)} in {time.perf_counter() - t0:.0f}s")
        rows = interleaved.measure(runners, ids, args.repeats, log)
        table = {"vanilla": interleaved.summary(rows["vanilla"])}
        for name in list(runners)[1:]:
            s = interleaved.summary(rows[name], rows["vanilla"])
            table[name] = {k: v for k, v in s.items() if k not in ("per_row",)} | {"compile_s": compile_s[name]}
            if (st := _stages(rows[name])) is not None:
                table[name]["stages"] = st
            if s["vanilla_identical"] != len(ids):
                raise RuntimeError(f"{spec} {name}: {s['vanilla_identical']}/{len(ids)} outputs equal vanilla's")
            log(f"[{spec}] {name}: {s['speedup']:.3f}x (decode {s['decode_speedup']:.3f}x, prefill "
                f"{s['prefill_ratio']:.2f}x), acceptance {s['acceptance_rate'] or 0:.3f}, mean accepted "
                f"{s['mean_accepted_length']:.2f}" + (f", lookup share {st['ngram_share']:.2f}" if st else ""))
        if args.hf:
            table.update(_hf(t, d, ids, rows["vanilla"], table["vanilla"], args, eos))
        out["sets"][spec] = table
        write_json(out, path)  # after every set: a crash keeps what was measured
    plot(args.tag)


def _hf(t, d, ids, vanilla_rows, vanilla, args, eos) -> dict:
    """HF's prompt lookup and assisted generation on the same prompts (ratios to our vanilla)."""
    import gc

    from jaxspec.hf_reference import hf_generate, load_hf_model
    hf, assistant = load_hf_model(t.source), load_hf_model(d.source)
    res = {}
    for name, how in (("hf-prompt-lookup", dict(prompt_lookup=(args.k, args.max_ngram))),
                      ("hf-assisted", dict(assistant=assistant)), ("hf-vanilla", {})):
        hf_generate(hf, ids[0], 8, eos, **how)  # warm-up, not timed
        new = secs = same = 0
        for pid, row in zip(ids, vanilla_rows):
            o, dt = hf_generate(hf, pid, args.max_new_tokens, eos, **how)
            new, secs, same = new + len(o), secs + dt, same + (o == row["output_ids"])
        res[name] = {"tok_per_s": new / secs, "speedup": new / secs / vanilla["tok_per_s"], "vanilla_identical": same}
        log(f"  {name}: {new / secs:.2f} tok/s ({res[name]['speedup']:.3f}x our vanilla), identical {same}/{len(ids)}")
    del hf, assistant
    gc.collect()
    return res


def plot(tag: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    path = RESULTS / f"cheap_drafts{tag}.json"
    out = json.loads(path.read_text())
    sets = list(out["sets"])
    names = [n for n in out["sets"][sets[0]] if n != "vanilla"]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(sets) * len(names) / 3), 4.2))
    w = 0.8 / len(names)
    for i, n in enumerate(names):
        ys = [out["sets"][s].get(n, {}).get("speedup", 0) for s in sets]
        ax.bar([j + i * w for j in range(len(sets))], ys, w, label=n)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([j + 0.4 - w / 2 for j in range(len(sets))], [s.replace("spec-bench:", "") for s in sets])
    ax.set_ylabel("end-to-end speedup vs vanilla (1.5B, greedy)")
    ax.set_title(f"cheap drafts, k = {out['k']}, {out['max_new_tokens']} tokens, best of {out['repeats']}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=110)
    log(f"wrote {path.with_suffix('.png')}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--sets", nargs="+", default=["humaneval:10", "spec-bench:summarization:10"],
                   help="SOURCE:LIMIT, e.g. spec-bench:rag:10")
    r.add_argument("-k", type=int, default=4)
    r.add_argument("--max-ngram", type=int, default=3)
    r.add_argument("--min-ngram", type=int, default=1)
    r.add_argument("--min-match", type=int, default=2)
    r.add_argument("--vocab", type=int, default=0, help="also the chain and the cascade with a hot-vocabulary head")
    r.add_argument("--max-new-tokens", type=int, default=64)
    r.add_argument("--repeats", type=int, default=2)
    r.add_argument("--hf", action="store_true", help="also HF prompt lookup and assisted generation")
    r.add_argument("--tag", default="")
    q = sub.add_parser("plot")
    q.add_argument("--tag", default="")
    args = p.parse_args()
    cmd_run(args) if args.cmd == "run" else plot(args.tag)


if __name__ == "__main__":
    main()
