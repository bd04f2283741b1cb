"""Hot-vocabulary draft heads replayed offline on every recorded set (issue 16 §3: acceptance per V on all
13 Spec-Bench categories and HumanEval chat and bodies, 10 prompts each): the 0.5B draft runs once over
prompt + the 1.5B's recorded greedy continuation (teacher-forced), which gives its greedy proposal after
every prefix; a greedy chain of k then accepts, each round, the proposals that match the continuation —
while they match, the draft's context *is* that prefix, so this is what `speculate` with
`DraftModel(vocab=...)` accepts, up to float ties between a one-token step and this one-pass forward (the
`--check` sets compare it with the measured runs). A head trimmed to V proposes the argmax over its V
kept ids (the logits there equal the full head's), so one forward serves every V.

    python -m experiments.hot_vocab.hot_vocab_replay                     # every set, 10 prompts, 128 tokens, k = 4
    python -m experiments.hot_vocab.hot_vocab_replay --sets humaneval:5 spec-bench:qa:3 spec-bench:translation:3 \\
        --new 48 --key check                                   # hot_vocab.py run's prompts and length

Reads experiments/results/continuations/*_134_*.json (experiments/easyspec/easyspec_data.continuations; the prompt ids
are re-encoded and checked against the file's key) and the shipped frequency file (or `--file`'s); a prompt's output
ends at `--new` tokens or after its first EOS, and its last round still reads up to k recorded tokens beyond (the
engine's statistics count what the target accepts before the cut). Writes
experiments/results/hot_vocab/hot_vocab_replay.json (one key per `--key`, each with its command line and commit)
+ .png."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from experiments.common.paths import CONTINUATIONS, results_dir
from experiments.common.results import log, provenance

RESULTS = results_dir("hot_vocab")
TARGET, DRAFT = "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"
SIZES = (8192, 16384, 32768, 49152, 65536)
OUT = RESULTS / "hot_vocab_replay.json"


def proposals(draft, seqs: list[list[int]], heads: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """For each sequence and head, i32[T]: the draft's greedy next token after seq[:t+1] (t = 0..T-1),
    over the full vocabulary ("full") or only over the kept ids of each trimmed head."""
    import jax
    import jax.numpy as jnp

    from jaxspec.cache import init_cache
    from jaxspec.model import forward

    cfg = draft.cfg
    kept = {n: jnp.asarray(ids, jnp.int32) for n, ids in heads.items()}

    @jax.jit
    def step(params, tokens):  # tokens i32[1, T] (T a multiple of 128: few compiles; the padding is causal-invisible)
        logits = forward(params, tokens, init_cache(cfg, 1, tokens.shape[1]), cfg, window=tokens.shape[1])[0][0]
        out = {"full": jnp.argmax(logits, -1)}
        for n, ids in kept.items():  # argmax over the kept columns, mapped back to vocabulary ids
            out[n] = ids[jnp.argmax(jnp.take(logits, ids, axis=1), -1)]
        return out

    res = []
    for s in seqs:
        T = -(-len(s) // 128) * 128
        toks = np.zeros((1, T), np.int32)
        toks[0, : len(s)] = s
        res.append({n: np.asarray(a)[: len(s)] for n, a in step(draft.params, jnp.asarray(toks)).items()})
    return res


def chain(seq: list[int], prompt_len: int, end: int, pred: np.ndarray, k: int) -> tuple[int, int, int]:
    """Greedy chain-of-k rounds over seq = prompt + the whole recorded continuation, emitting up to
    seq[:end]: (rounds, drafted, accepted). The prefill emits the first token; each round accepts the
    leading proposals equal to the continuation (pred[t] is the proposal for seq[t + 1]) and then one
    more token (the correction or the bonus). As in the engine's statistics, a round's accepted drafts
    count before the output is cut at `end` (max_new_tokens or EOS): the target verifies them anyway."""
    done = prompt_len + 1
    rounds = accepted = 0
    while done < end:
        n = 0
        while n < k and done + n < len(seq) and pred[done - 1 + n] == seq[done + n]:
            n += 1
        rounds, accepted, done = rounds + 1, accepted + n, done + n + 1
    return rounds, rounds * k, accepted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="*", help="SOURCE[:N] (default every recorded set, N = --prompts)")
    ap.add_argument("--prompts", type=int, default=10)
    ap.add_argument("--new", type=int, default=128, help="tokens per prompt (<= the recorded 134)")
    ap.add_argument("-k", type=int, default=4)
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--key", default="all")
    ap.add_argument("--file", default=None, help="a frequency file (default: the shipped one)")
    args = ap.parse_args()
    from types import SimpleNamespace

    from conversion.loader import load_model
    from conversion.tokenizer import eos_ids
    from jaxspec.prompts import encode, load_prompts
    from jaxspec.speculative.hot_vocab import find_file, load_hot_vocab

    draft = load_model(DRAFT)
    tok = draft.tokenizer  # the pair's one tokenizer
    freq = Path(args.file) if args.file else find_file(tok)
    heads = {str(n): load_hot_vocab(freq, n, tokenizer=tok).ids for n in args.sizes}
    stop = set(eos_ids(tok, SimpleNamespace(eos_token_ids=())))
    files = {json.loads(p.read_text())["source"]: p for p in sorted(CONTINUATIONS.glob("*_134_*.json"))}
    wanted = [s.rsplit(":", 1) if s.rsplit(":", 1)[-1].isdigit() else (s, args.prompts) for s in args.sets or files]
    out = {"draft": DRAFT, "target": TARGET, "file": freq.name, "k": args.k, "new_tokens": args.new, "sets": {}}
    pooled: dict[str, np.ndarray] = {}
    for source, n in wanted:
        if source not in files:
            raise ValueError(f"no recorded continuations for {source!r} (have: {', '.join(files)})")
        d = json.loads(files[source].read_text())
        ids = [encode(tok, p) for p in load_prompts(source, len(d["continuations"]))]
        key = hashlib.sha256(json.dumps([TARGET, ids, d["length"]]).encode()).hexdigest()[:16]
        if not files[source].name.endswith(f"_{key}.json"):
            raise ValueError(f"{files[source].name}: the re-encoded prompts of {source} are not the ones recorded")
        seqs, plens, ends = [], [], []
        for p, c in list(zip(ids, d["continuations"]))[: int(n)]:
            if len(c) < args.new + args.k:
                raise ValueError(f"{source}: {len(c)} recorded tokens; the last round reads up to {args.new + args.k}")
            out_len = next((i + 1 for i, t in enumerate(c[: args.new]) if t in stop), args.new)  # cut after EOS
            seqs.append(p + c[: args.new + args.k])
            plens.append(len(p))
            ends.append(len(p) + out_len)
        preds = proposals(draft, seqs, heads)
        cells = {}
        for head in ["full", *heads]:
            r = np.sum([chain(s, pl, e, pr[head], args.k) for s, pl, e, pr in zip(seqs, plens, ends, preds)], axis=0)
            pooled[head] = pooled.get(head, 0) + r
            cells[head] = _cell(r)
        out["sets"][source] = {"prompts": len(seqs), "cells": _versus_full(cells)}
        log(
            f"{source} ({len(seqs)} prompts): "
            + ", ".join(
                f"{h} α {c['acceptance_rate']:.3f}" + (f" ({c['of_full']:.3f} of full)" if h != "full" else "")
                for h, c in out["sets"][source]["cells"].items()
            )
        )
    out["pooled"] = _versus_full({h: _cell(r) for h, r in pooled.items()})
    log("pooled: " + ", ".join(f"{h} α {c['acceptance_rate']:.3f}" for h, c in out["pooled"].items()))
    doc = json.loads(OUT.read_text()) if OUT.exists() else {}
    doc[args.key] = {**out, **provenance()}
    from jaxspec.bench import write_json

    write_json(doc, OUT)
    plot(doc)


def _cell(r) -> dict:
    rounds, drafted, accepted = map(int, r)
    return {
        "rounds": rounds,
        "drafted": drafted,
        "accepted": accepted,
        "acceptance_rate": accepted / drafted,
        "mean_accepted_length": 1 + accepted / rounds,
    }


def _versus_full(cells: dict) -> dict:
    for c in cells.values():
        c["of_full"] = c["acceptance_rate"] / cells["full"]["acceptance_rate"]
    return cells


def plot(doc: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(doc), 1, figsize=(13, 4.2 * len(doc)), squeeze=False)
    for ax, (key, out) in zip(axes[:, 0], doc.items()):
        sets = [*out["sets"], "pooled"]
        cells = lambda s: out["pooled"] if s == "pooled" else out["sets"][s]["cells"]  # noqa: E731
        heads = [h for h in cells(sets[0]) if h != "full"]
        w = 0.8 / len(heads)
        for i, h in enumerate(heads):
            ax.bar(
                np.arange(len(sets)) + i * w, [cells(s)[h]["of_full"] for s in sets], w, label=f"V={int(h) // 1024}K"
            )
        ax.axhline(0.97, color="r", lw=0.8, ls="--", label="target 0.97")
        ax.set_ylim(0.5, 1.05)
        ax.set_xticks(
            np.arange(len(sets)) + 0.4 - w / 2, [s.replace("spec-bench:", "") for s in sets], rotation=30, ha="right"
        )
        ax.set_ylabel("acceptance, share of the full head's")
        ax.set_title(
            f"{key} ({out['file']}): 0.5B chain k={out['k']} replayed on the 1.5B's greedy text "
            f"({out['new_tokens']} tokens)",
            fontsize=9,
        )
        ax.legend(fontsize=7, ncol=len(heads) + 1)
    fig.tight_layout()
    fig.savefig(RESULTS / "hot_vocab_replay.png", dpi=110)
    log(f"wrote {RESULTS / 'hot_vocab_replay.png'}")


if __name__ == "__main__":
    main()
