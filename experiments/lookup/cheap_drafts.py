"""Cheap drafts against the draft-model chain (issue 16 §3): the 1.5B target, greedy, on one CPU device —
vanilla, the 0.5B draft model's chain, prompt lookup (NGram), the cascade (lookup in front of the 0.5B:
switch at `--min-match`, and extend), each optionally with the 0.5B's head trimmed to `--vocab` hot tokens,
and a grid of other lookup settings (`--ngram-grid K:MAX:MIN ...`); every method on the same prompts in one
process, interleaved prompt by prompt, best of `--repeats` (experiments/common/interleaved.py), compile and warm-up
excluded, prefill and decode apart. `--hf` adds HF's greedy `generate` on the same prompts — `vanilla`,
`prompt-lookup` (`prompt_lookup_num_tokens` = k, `max_matching_ngram_size` = max n) and `assisted` (the
0.5B) — interleaved per prompt after a warm-up, timed once each.

A run appends chunks (a set's prompts [offset, offset + n)) to experiments/results/lookup/cheap_drafts<tag>.json, one
per set, written as each finishes; a chunk already there is skipped, so a long sweep spreads over several runs
(with the same settings: a file holds one configuration, other settings need another `--tag`):

    python -m experiments.lookup.cheap_drafts run --sets humaneval:0:3 spec-bench:summarization:0:3 \
        --hf vanilla prompt-lookup
    python -m experiments.lookup.cheap_drafts table     # per set and pooled (Spec-Bench's categories), markdown
    python -m experiments.lookup.cheap_drafts plot      # experiments/results/lookup/cheap_drafts<tag>.png
    python -m experiments.lookup.cheap_drafts table --tag _full _ten   # two runs' chunks pooled (common methods)

Every row keeps its per-prompt times, so sets and runs pool by summing tokens and seconds."""

from __future__ import annotations

import argparse
import json

from experiments.common import interleaved
from experiments.common.chunks import chunks, measure_chunk
from experiments.common.paths import results_dir
from experiments.common.results import log, write_json

RESULTS = results_dir("lookup")
TARGET, DRAFT = "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"


def _methods(args, d_tok):
    """(name, k, needs the draft model, drafter) per method; drafter None: DraftModel with the full head."""
    from jaxspec.speculative import Cascade, DraftModel, NGram
    from jaxspec.speculative.hot_vocab import find_file, load_hot_vocab

    vocab = load_hot_vocab(find_file(d_tok), args.vocab, tokenizer=d_tok) if args.vocab else None
    ng, k = NGram(args.max_ngram, args.min_ngram), args.k
    every = {
        "chain": (k, True, None),
        "ngram": (k, False, ng),
        "cascade": (k, True, Cascade(ng, min_match=args.min_match)),
        "cascade-extend": (k, True, Cascade(ng, extend=True)),
    }
    if vocab is not None:
        every[f"chain-V{args.vocab}"] = (k, True, DraftModel(vocab=vocab))
        every[f"cascade-V{args.vocab}"] = (k, True, Cascade(ng, DraftModel(vocab=vocab), min_match=args.min_match))
    out = [(n, *every[n]) for n in args.methods]
    out += [(n, *every[n]) for n in every if args.vocab and f"V{args.vocab}" in n]
    for g in args.ngram_grid:
        gk, hi, lo = map(int, g.split(":"))
        out.append((f"ngram-k{gk}-n{hi}..{lo}", gk, False, NGram(hi, lo)))
    return out


def cmd_run(args) -> None:
    from conversion.loader import load_model
    from conversion.tokenizer import eos_ids
    from jaxspec.decode import cache_slots
    from jaxspec.prompts import encode, load_prompts
    from jaxspec.speculative import chain, make_runner

    path = RESULTS / f"cheap_drafts{args.tag}.json"
    out = (
        json.loads(path.read_text())
        if path.exists()
        else {
            "target": TARGET,
            "draft": DRAFT,
            "max_new_tokens": args.max_new_tokens,
            "measurement": "interleaved per prompt, best of repeats per prompt and method; HF once each",
            "chunks": [],
        }
    )
    if out["max_new_tokens"] != args.max_new_tokens:
        raise SystemExit(f"{path} holds runs of {out['max_new_tokens']} tokens; use another --tag")
    config = {
        "methods": args.methods,
        "k": args.k,
        "max_ngram": args.max_ngram,
        "min_ngram": args.min_ngram,
        "min_match": args.min_match,
        "vocab": args.vocab,
        "ngram_grid": args.ngram_grid,
        "hf": args.hf,
        "repeats": args.repeats,
    }
    for c in out["chunks"]:  # chunks pool only when they measured the same methods the same way
        if {k: v for k, v in c["config"].items() if k != "max_len"} != config:
            raise SystemExit(f"{path} was measured with {c['config']}; this run's settings differ: use another --tag")
    done = {(c["source"], c["offset"], c["n"]) for c in out["chunks"]}
    todo = [c for c in chunks(args.sets) if c not in done]
    if not todo:
        log("every chunk is already measured")
        return
    t, d = load_model(TARGET), load_model(DRAFT)
    eos, N = eos_ids(t.tokenizer, t.cfg), args.max_new_tokens
    sets = {c: [encode(t.tokenizer, p) for p in load_prompts(c[0], c[2], c[1])] for c in todo}
    methods = _methods(args, d.tokenizer)
    # one cache size for every set: each runner's loop compiles once (prefill per prompt-width bucket)
    nodes = max((chain(k).shape.nodes for _, k, _, _ in methods), default=1)  # none: vanilla (and HF) only
    max_len = cache_slots(max(len(i) for ids in sets.values() for i in ids) + N + nodes + 1)
    kw = dict(max_new_tokens=N, eos_ids=eos, max_len=max_len)
    runners = {"vanilla": make_runner(t, None, None, **kw)}
    for name, k, with_draft, drafter in methods:
        runners[name] = make_runner(t, d if with_draft else None, chain(k), drafter=drafter, **kw)
    hf = _hf_models(t, d, args.hf) if args.hf else None
    config["max_len"] = max_len
    warmed: set = set()
    for key, ids in sets.items():
        chunk, rows = measure_chunk(runners, key, ids, args.repeats, warmed, config=config)
        van = rows["vanilla"]
        chunk["vanilla_output_ids"] = [r["output_ids"] for r in van]
        if hf is not None:
            chunk["hf"] = _hf(hf, ids, van, args, eos)
        _log_chunk(chunk)
        out["chunks"].append(chunk)
        write_json(out, path)  # after every chunk: a crash keeps what was measured
    plot([[args.tag]])


def _hf_models(t, d, names):
    from jaxspec.hf_reference import load_hf_model

    return {
        "target": load_hf_model(t.source),
        "assistant": load_hf_model(d.source) if "assisted" in names else None,
        "names": names,
    }


def _hf(hf, ids, vanilla_rows, args, eos) -> dict:
    """HF's greedy generate per method, interleaved per prompt (rotated order), one timing each."""
    from jaxspec.hf_reference import hf_generate

    how = {
        "vanilla": {},
        "prompt-lookup": dict(prompt_lookup=(args.k, args.max_ngram)),
        "assisted": dict(assistant=hf["assistant"]),
    }
    names = hf["names"]
    for n in names:
        hf_generate(hf["target"], ids[0], 8, eos, **how[n])  # warm-up, not timed
    res = {n: [] for n in names}
    for j, (pid, row) in enumerate(zip(ids, vanilla_rows)):
        s = j % len(names)
        for n in names[s:] + names[:s]:
            o, dt = hf_generate(hf["target"], pid, args.max_new_tokens, eos, **how[n])
            res[n].append({"new_tokens": len(o), "wall_s": dt, "identical": o == row["output_ids"]})
    return res


def _pool(chunks: list[dict]) -> dict:
    """Per method: our rows pooled (interleaved.summary against vanilla), HF's tok/s and ratios."""
    from jaxspec.bench import stage_shares

    rows: dict[str, list] = {}
    hf: dict[str, list] = {}
    for c in chunks:
        for m, rs in c["rows"].items():
            rows.setdefault(m, []).extend(rs)
        for m, rs in c.get("hf", {}).items():
            hf.setdefault(m, []).extend(rs)
    van = rows["vanilla"]
    res = {"vanilla": interleaved.summary(van)}
    for m, rs in rows.items():
        if m == "vanilla":
            continue
        s, v = interleaved.summary(rs), res["vanilla"]
        res[m] = s | {
            "speedup": s["tok_per_s"] / v["tok_per_s"],
            "decode_speedup": s["decode_tok_per_s"] / v["decode_tok_per_s"],
            "prefill_ratio": s["prefill_s"] / v["prefill_s"],
            "vanilla_identical": sum(r["identical"] for r in rs),
        }
        if rs and "cascade" in (rs[0].get("drafter") or {}):
            res[m]["stages"] = stage_shares(rs)
    for m, rs in hf.items():
        tps = sum(r["new_tokens"] for r in rs) / sum(r["wall_s"] for r in rs)
        res[f"hf-{m}"] = {
            "prompts": len(rs),
            "tok_per_s": tps,
            "speedup": tps / res["vanilla"]["tok_per_s"],
            "vanilla_identical": sum(r["identical"] for r in rs),
        }
    if "hf-vanilla" in res:
        for m in hf:
            res[f"hf-{m}"]["vs_hf_vanilla"] = res[f"hf-{m}"]["tok_per_s"] / res["hf-vanilla"]["tok_per_s"]
    return res


def _log_chunk(c: dict) -> None:
    res = _pool([c])
    for m, s in res.items():
        if m == "vanilla":
            log(f"  vanilla: {s['tok_per_s']:.2f} tok/s")
        elif m.startswith("hf-"):
            log(
                f"  {m}: {s['tok_per_s']:.2f} tok/s ({s['speedup']:.3f}x our vanilla), "
                f"identical {s['vanilla_identical']}"
            )
        else:
            st = s.get("stages")
            log(
                f"  {m}: {s['speedup']:.3f}x (decode {s['decode_speedup']:.3f}x), acceptance "
                f"{s['acceptance_rate'] or 0:.3f}, mean accepted {s['mean_accepted_length']:.2f}"
                + (f", lookup share {st['ngram_share']:.2f}" if st else "")
            )


def _groups(out: dict) -> dict[str, list[dict]]:
    """Set name -> its chunks, then 'spec-bench (pooled)' over every Spec-Bench category."""
    groups: dict[str, list[dict]] = {}
    for c in out["chunks"]:
        groups.setdefault(c["source"].replace("spec-bench:", ""), []).append(c)
    sb = [c for c in out["chunks"] if c["source"].startswith("spec-bench:")]
    if sb:
        groups["spec-bench (pooled)"] = sb
    return groups


def _load(tags: list[str]) -> dict:
    """The chunks of one tag's file, or of several pooled: then only what every chunk measured (our methods
    and HF's common to all of them), and no prompt measured twice."""
    outs = [json.loads((RESULTS / f"cheap_drafts{t}.json").read_text()) for t in tags]
    if len({o["max_new_tokens"] for o in outs}) > 1:
        raise SystemExit(f"{tags} hold runs of different lengths: {[o['max_new_tokens'] for o in outs]} tokens")
    chunks = [c for o in outs for c in o["chunks"]]
    if len(outs) == 1:
        return outs[0]
    seen: dict[str, set] = {}
    for c in chunks:
        ids = set(range(c["offset"], c["offset"] + c["n"]))
        if seen.setdefault(c["source"], set()) & ids:
            raise SystemExit(f"{c['source']}: prompts {sorted(seen[c['source']] & ids)} are in more than one of {tags}")
        seen[c["source"]] |= ids
    common = set.intersection(*(set(c["rows"]) for c in chunks))
    hf = set.intersection(*(set(c.get("hf", {})) for c in chunks))
    chunks = [
        c
        | {
            "rows": {m: rs for m, rs in c["rows"].items() if m in common},
            "hf": {m: rs for m, rs in c.get("hf", {}).items() if m in hf},
        }
        for c in chunks
    ]
    return outs[0] | {"chunks": chunks}


def _results(tag_groups: list[list[str]], hf_groups: list[list[str]] = ()) -> tuple[dict, dict]:
    """Set -> the first group's chunks, and set -> pooled results. Each group of tags pools on its own (its
    methods against the jaxspec vanilla timed in the same processes); a later group adds only the methods the
    earlier ones lack. With hf_groups, HF's columns come from those groups instead of the tag groups."""
    chunks = _groups(_load(tag_groups[0]))
    res = {g: _pool(cs) for g, cs in chunks.items()}
    if hf_groups:
        res = {g: {m: s for m, s in r.items() if not m.startswith("hf-")} for g, r in res.items()}
    for tags, hf in [(t, False) for t in tag_groups[1:]] + [(t, True) for t in hf_groups]:
        more = {g: _pool(cs) for g, cs in _groups(_load(tags)).items()}
        for g, r in res.items():
            r |= {
                m: s for m, s in more.get(g, {}).items() if m not in r and m != "vanilla" and m.startswith("hf-") == hf
            }
    return chunks, res


def table(tag_groups: list[list[str]], hf_groups: list[list[str]] = ()) -> str:
    chunks, groups = _results(tag_groups, hf_groups)
    methods = [m for m in next(iter(groups.values())) if m != "vanilla"]
    lines = [
        "| set | n | prompt tokens | vanilla tok/s (prefill share) | " + " | ".join(methods) + " |",
        "|---|---|---|---|" + "---|" * len(methods),
    ]
    for g, res in groups.items():
        cells = []
        for m in methods:
            s = res.get(m)
            if s is None:
                cells.append("—")
                continue
            n = f" n={s['prompts']}" if s["prompts"] != res["vanilla"]["prompts"] else ""  # measured on fewer prompts
            if m.startswith("hf-"):
                cells.append(
                    f"{s['speedup']:.2f}×" + (f" ({s['vs_hf_vanilla']:.2f}× HF)" if "vs_hf_vanilla" in s else "") + n
                )
            else:
                st = s.get("stages")
                cells.append(
                    f"{s['speedup']:.2f}× (dec {s['decode_speedup']:.2f}; len {s['mean_accepted_length']:.2f}"
                    + (f"; lookup {st['ngram_share']:.0%}" if st else "")
                    + ")"
                    + n
                )
        v, rows = res["vanilla"], [r for c in chunks[g] for r in c["rows"]["vanilla"]]
        lines.append(
            f"| {g} | {v['prompts']} | {sum(r['prompt_tokens'] for r in rows) / len(rows):.0f} | "
            f"{v['tok_per_s']:.2f} ({v['prefill_s'] / (v['prefill_s'] + v['decode_s']):.0%}) | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def plot(tag_groups: list[list[str]], hf_groups: list[list[str]] = (), name: str | None = None) -> None:
    from experiments.common.bars import grouped_bars

    # several tags: the PNG is named after all of them (and after the HF tags, if any), unless `name` says
    name = name or "_and".join("".join(t) for t in tag_groups) + "".join("_hf" + "".join(t) for t in hf_groups)
    path = RESULTS / f"cheap_drafts{name}.png"
    groups = _results(tag_groups, hf_groups)[1]
    sets = list(groups)
    names = [n for n in groups[sets[0]] if n not in ("vanilla", "hf-vanilla")]
    bars = {n: [groups[s].get(n, {}).get("speedup", 0) for s in sets] for n in names}
    fewer = {n: [groups[s].get(n, {}).get("prompts", 0) < groups[s]["vanilla"]["prompts"] for s in sets] for n in names}
    grouped_bars(
        path,
        sets,
        bars,
        ylabel="end-to-end speedup vs jaxspec vanilla",
        title="cheap drafts on the 1.5B (greedy, CPU)",
        figsize=(max(7, 0.45 * len(sets) * len(names)), 4.4),
        hatched=fewer,
        hatched_label="hatched: fewer prompts than the set (table: n=)",
    )
    log(f"wrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument(
        "--sets",
        nargs="+",
        default=["humaneval:0:10", "spec-bench:summarization:0:10"],
        help="SOURCE:OFFSET:N or SOURCE:N, e.g. spec-bench:rag:0:10",
    )
    r.add_argument(
        "--methods",
        nargs="*",
        default=["chain", "ngram", "cascade", "cascade-extend"],
        choices=["chain", "ngram", "cascade", "cascade-extend"],
    )
    r.add_argument("-k", type=int, default=4)
    r.add_argument("--max-ngram", type=int, default=3)
    r.add_argument("--min-ngram", type=int, default=1)
    r.add_argument("--min-match", type=int, default=2)
    r.add_argument("--ngram-grid", nargs="*", default=[], metavar="K:MAX:MIN", help="more lookup settings")
    r.add_argument("--vocab", type=int, default=0, help="also the chain and the cascade with a hot-vocabulary head")
    r.add_argument("--max-new-tokens", type=int, default=64)
    r.add_argument("--repeats", type=int, default=2)
    r.add_argument("--hf", nargs="*", default=[], choices=["vanilla", "prompt-lookup", "assisted"])
    r.add_argument("--tag", default="")
    for name in ("table", "plot"):
        t = sub.add_parser(name)
        t.add_argument(
            "--tag",
            nargs="+",
            action="append",
            help="one file's tag, or several to pool (their common "
            "methods); repeated: each group pools apart, a later one adds the methods the earlier lack",
        )
        t.add_argument(
            "--hf-tag",
            nargs="+",
            action="append",
            default=[],
            help="HF's columns from these files instead (repeatable like --tag)",
        )
    sub.choices["plot"].add_argument(
        "--name",
        default=None,
        help="the PNG is cheap_drafts<NAME>.png (default: "
        "built from the tags; the docs' ten-prompt table with every column: _ten_all)",
    )
    args = p.parse_args()
    if args.cmd == "run":
        cmd_run(args)
    elif args.cmd == "table":
        print(table(args.tag or [[""]], args.hf_tag))
    else:
        plot(args.tag or [[""]], args.hf_tag, args.name)


if __name__ == "__main__":
    main()
