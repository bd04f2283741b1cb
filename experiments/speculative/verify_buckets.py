"""What the verification width buckets save (issue 16 §1). A chain whose drafted depth varies from round to
round — prompt lookup (a short or no match), an adaptive chain (k moves within [1, k_max]), DEL (a
confidence stop, at most 18) — is verified at the narrowest of 1, 2, 4, 8, 16, 1 + cap positions that holds
the round's drafts (`verification.verify_widths`, one `lax.switch`); `chain(k, narrow=False)` verifies the
full 1 + cap block every round. The two run the same rounds and emit the same tokens (tested), so the
decode-time ratio is what the buckets save, and nothing else.

The 1.5B target, greedy, fp32, batch 1, one CPU device; per method both widths and vanilla on the same
prompts in one process, interleaved prompt by prompt (experiments/common/interleaved.py), compile and warm-up
excluded. Chunks (a set's prompts [offset, offset + n)) are appended to
experiments/results/speculative/verify_buckets<tag>.json as each finishes, so a sweep spreads over runs (as
experiments/lookup/cheap_drafts.py):

    python -m experiments.speculative.verify_buckets run --sets humaneval:0:1 spec-bench:summarization:0:1
    python -m experiments.speculative.verify_buckets table  # per set and pooled, markdown
    python -m experiments.speculative.verify_buckets plot   # experiments/results/speculative/verify_buckets<tag>.png"""

from __future__ import annotations

import argparse
import json

from experiments.common import interleaved
from experiments.common.chunks import chunks, measure_chunk
from experiments.common.paths import results_dir
from experiments.common.results import log, write_json

RESULTS = results_dir("speculative")
TARGET, DRAFT = "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"

METHODS = ("ngram", "ngram-k8", "adaptive", "del")


def _methods(names):
    """name -> (chain method with the buckets, needs the draft model, drafter); '-full' twins verify at full width."""
    from jaxspec.selfspec import DEL
    from jaxspec.speculative import NGram, chain

    every = {
        "ngram": (dict(k=4), False, NGram(3, 2)),  # widths 1, 2, 4, 5
        "ngram-k8": (dict(k=8), False, NGram(3, 2)),  # 1, 2, 4, 8, 9
        "adaptive": (dict(k=4, adaptive=True, k_max=8), True, None),  # the 0.5B, HF's heuristic; 1, 2, 4, 8, 9
        "del": (dict(k=18), False, DEL()),
    }  # 1, 2, 4, 8, 16, 19 (its plain steps are 1 wide either way)
    out = {}
    for n in names:
        kw, with_draft, drafter = every[n]
        out[n] = (chain(**kw), with_draft, drafter)
        out[f"{n}-full"] = (chain(**kw, narrow=False), with_draft, drafter)
    return out


def cmd_run(args) -> None:
    from conversion.loader import load_model
    from conversion.tokenizer import eos_ids
    from jaxspec.decode import cache_slots
    from jaxspec.prompts import encode, load_prompts
    from jaxspec.speculative import make_runner
    from jaxspec.speculative.verification import verify_widths

    path = RESULTS / f"verify_buckets{args.tag}.json"
    out = (
        json.loads(path.read_text())
        if path.exists()
        else {
            "target": TARGET,
            "draft": DRAFT,
            "max_new_tokens": args.max_new_tokens,
            "methods": args.methods,
            "measurement": "interleaved per prompt, best of repeats per prompt and method",
            "chunks": [],
        }
    )
    if (out["max_new_tokens"], out["methods"]) != (args.max_new_tokens, args.methods):
        raise SystemExit(f"{path} holds {out['methods']} at {out['max_new_tokens']} tokens; use another --tag")
    done = {(c["source"], c["offset"], c["n"]) for c in out["chunks"]}
    todo = [c for c in chunks(args.sets) if c not in done]
    if not todo:
        log("every chunk is already measured")
        return
    t = load_model(TARGET)
    methods = _methods(args.methods)
    d = load_model(DRAFT) if any(w for _, w, _ in methods.values()) else None
    eos, N = eos_ids(t.tokenizer, t.cfg), args.max_new_tokens
    sets = {c: [encode(t.tokenizer, p) for p in load_prompts(c[0], c[2], c[1])] for c in todo}
    nodes = max(m.shape.nodes for m, _, _ in methods.values())
    max_len = cache_slots(max(len(i) for ids in sets.values() for i in ids) + N + nodes + 1)
    kw = dict(max_new_tokens=N, eos_ids=eos, max_len=max_len)
    runners = {"vanilla": make_runner(t, None, None, **kw)}
    for name, (m, with_draft, drafter) in methods.items():
        runners[name] = make_runner(t, d if with_draft else None, m, drafter=drafter, **kw)
    widths = {n: list(verify_widths(r.spec)) for n, r in runners.items() if n != "vanilla"}
    log(f"verification widths: {widths}")
    warmed: set = set()
    for key, ids in sets.items():
        fields = dict(max_len=max_len, widths=widths, repeats=args.repeats)
        chunk, _ = measure_chunk(runners, key, ids, args.repeats, warmed, **fields)
        source = key[0]
        for m in args.methods:  # the twins ran the same rounds: only the block's width differs
            a, b = chunk["rows"][m], chunk["rows"][f"{m}-full"]
            if [r["stats"] for r in a] != [r["stats"] for r in b]:
                raise RuntimeError(f"{source} {m}: the full-width twin ran other rounds")
        for m, s in _pool([chunk]).items():
            log(f"  {m}: " + ", ".join(f"{k} {v:.3f}" for k, v in s.items() if isinstance(v, float)))
        out["chunks"].append(chunk)
        write_json(out, path)  # after every chunk: a crash keeps what was measured
    plot(args.tag)


def _pool(chunks: list[dict]) -> dict[str, dict]:
    """Per method: decode speedup over vanilla with the buckets and at full width, what the buckets save
    (1 - bucketed decode s / full-width decode s), rounds and the mean drafted depth."""
    rows: dict[str, list] = {}
    for c in chunks:
        for m, rs in c["rows"].items():
            rows.setdefault(m, []).extend(rs)
    van = interleaved.summary(rows["vanilla"])
    res = {}
    for m in [m for m in rows if m != "vanilla" and not m.endswith("-full")]:
        a, b = interleaved.summary(rows[m]), interleaved.summary(rows[f"{m}-full"])
        res[m] = {
            "decode_speedup": a["decode_tok_per_s"] / van["decode_tok_per_s"],
            "decode_speedup_full": b["decode_tok_per_s"] / van["decode_tok_per_s"],
            "speedup": a["tok_per_s"] / van["tok_per_s"],
            "speedup_full": b["tok_per_s"] / van["tok_per_s"],
            "saved": 1 - a["decode_s"] / b["decode_s"],
            "rounds": a["rounds"],
            "mean_drafted_depth": a["mean_drafted_depth"],
            "mean_accepted_length": a["mean_accepted_length"],
            "prompts": a["prompts"],
        }
    return res


def _groups(out: dict) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for c in out["chunks"]:
        groups.setdefault(c["source"].replace("spec-bench:", ""), []).append(c)
    sb = [c for c in out["chunks"] if c["source"].startswith("spec-bench:")]
    if sb:
        groups["spec-bench (pooled)"] = sb
    groups["all (pooled)"] = out["chunks"]
    return groups


def table(tag: str) -> str:
    out = json.loads((RESULTS / f"verify_buckets{tag}.json").read_text())
    groups = {g: _pool(cs) for g, cs in _groups(out).items()}
    widths = out["chunks"][0]["widths"]
    methods = list(next(iter(groups.values())))
    head = [f"{m} (widths {', '.join(map(str, widths[m]))})" for m in methods]
    lines = ["| set | n | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(methods)]
    for g, res in groups.items():
        cells = [
            f"dec {s['decode_speedup']:.2f}× vs {s['decode_speedup_full']:.2f}× (saves {s['saved']:.0%}; "
            f"depth {s['mean_drafted_depth']:.2f}, len {s['mean_accepted_length']:.2f})"
            for s in res.values()
        ]
        lines.append(f"| {g} | {next(iter(res.values()))['prompts']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(tag: str) -> None:
    from experiments.common.bars import grouped_bars

    path = RESULTS / f"verify_buckets{tag}.png"
    groups = {g: _pool(cs) for g, cs in _groups(json.loads(path.with_suffix(".json").read_text())).items()}
    sets, methods = list(groups), list(next(iter(groups.values())))
    label = {m: f"{m} (width buckets)" for m in methods}
    bars = {label[m]: [groups[s][m]["decode_speedup"] for s in sets] for m in methods}
    full = {label[m]: [groups[s][m]["decode_speedup_full"] for s in sets] for m in methods}
    grouped_bars(
        path,
        sets,
        bars,
        ticks=full,
        ticks_label="full width",
        ylabel="decode speedup vs vanilla",
        title="verification width buckets vs the full block (1.5B, greedy, CPU)",
        figsize=(min(14, max(7, 0.25 * len(sets) * len(methods))), 4.4),
    )
    log(f"wrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument(
        "--sets",
        nargs="+",
        default=["humaneval:0:1", "spec-bench:summarization:0:1"],
        help="SOURCE:OFFSET:N or SOURCE:N, e.g. spec-bench:rag:0:2",
    )
    r.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    r.add_argument("--max-new-tokens", type=int, default=64)
    r.add_argument("--repeats", type=int, default=1)
    r.add_argument("--tag", default="")
    for name in ("table", "plot"):
        sub.add_parser(name).add_argument("--tag", default="")
    args = p.parse_args()
    if args.cmd == "run":
        cmd_run(args)
    elif args.cmd == "table":
        print(table(args.tag))
    else:
        plot(args.tag)


if __name__ == "__main__":
    main()
