"""Prompt lookup replayed offline on the 1.5B's recorded greedy continuations (issue 16's prediction
method): for every prompt, rounds of `jaxspec.speculative.ngram.lookup` over prompt + the tokens
committed so far, each round accepting the proposal's prefix that equals the recorded continuation,
then one more token (the correction or bonus) — exactly what greedy speculation with NGram does on
those prompts, without running a model. Reports per set and (k, n range): tokens per round (= the
speedup at zero draft cost if a verification block cost one step; on this CPU a block of 1 + k
positions costs more, see docs/lookup.md) and the share of rounds with a proposal.

    python -m experiments.lookup.ngram_replay          # every recorded set, k in 2 4 8, n in 1-3 and 2-4

Reads experiments/results/continuations/*_134_*.json (written by experiments/easyspec/easyspec_data.continuations: 134
greedy tokens of qwen2.5-coder-1.5b-instruct per prompt, no stop tokens; the prompt ids are re-encoded and checked
against the file's key). Writes experiments/results/lookup/ngram_replay.json + .png."""

from __future__ import annotations

import argparse
import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common.paths import CONTINUATIONS, results_dir
from experiments.common.results import log, write_json

RESULTS = results_dir("lookup")
TARGET = "qwen2.5-coder-1.5b-instruct"


def replay(prompts: list[list[int]], conts: list[list[int]], new: int, k: int, max_n: int, min_n: int) -> dict:
    """Greedy NGram speculation replayed on the recorded continuations: every prompt as one batch row."""
    from jaxspec.speculative.ngram import lookup

    B = len(prompts)
    S = max(len(p) for p in prompts) + new + k + 1
    hist = np.zeros((B, S), np.int32)
    for i, (p, c) in enumerate(zip(prompts, conts)):
        seq = p + c[:new]
        hist[i, : len(seq)] = seq  # the lookup reads only below `length`: the future is never seen
    done = np.array([len(p) + 1 for p in prompts])  # the first token comes from the prefill
    end = np.array([len(p) + new for p in prompts])
    rounds = proposing = drafted = accepted = 0
    fn = jax.jit(lookup, static_argnums=(2, 3, 4))
    while (done < end).any():
        live = done < end
        toks, count = map(np.asarray, fn(jnp.asarray(hist), jnp.asarray(done, jnp.int32), max_n, min_n, k))
        for i in np.flatnonzero(live):
            c = int(count[i])
            truth = hist[i, done[i] : done[i] + c]
            n = int(np.argmin(np.append(toks[i, :c] == truth, False)))  # the matching prefix
            n = min(n, int(end[i] - done[i]) - 1)  # the last round emits what is left
            rounds, proposing, drafted, accepted = rounds + 1, proposing + (c > 0), drafted + c, accepted + n
            done[i] += n + 1
    return {
        "rounds": rounds,
        "tokens_per_round": B * (new - 1) / rounds,  # decode: after the prefill's token
        "proposing_share": proposing / rounds,
        "drafted": drafted,
        "accepted": accepted,
        "acceptance_rate": accepted / drafted if drafted else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", default="2,4,8")
    ap.add_argument("--ngrams", default="3:1,4:2", help="max:min n-gram ranges")
    ap.add_argument("--new", type=int, default=128, help="tokens per prompt (<= the recorded 134)")
    args = ap.parse_args()
    from conversion.loader import load_model_tokenizer
    from jaxspec.prompts import encode, load_prompts

    tok = load_model_tokenizer(TARGET)
    out = {"target": TARGET, "new_tokens": args.new, "sets": {}}
    for path in sorted(CONTINUATIONS.glob("*_134_*.json")):
        d = json.loads(path.read_text())
        source, conts = d["source"], d["continuations"]
        ids = [encode(tok, p) for p in load_prompts(source, len(conts))]
        key = hashlib.sha256(json.dumps([TARGET, ids, d["length"]]).encode()).hexdigest()[:16]
        if not path.name.endswith(f"_{key}.json"):
            raise ValueError(f"{path.name}: the re-encoded prompts of {source} are not the ones recorded")
        cells = {}
        for k in map(int, args.ks.split(",")):
            for rng in args.ngrams.split(","):
                hi, lo = map(int, rng.split(":"))
                cells[f"k{k}-n{lo}-{hi}"] = r = replay(ids, conts, args.new, k, hi, lo)
                log(
                    f"{source} k={k} n={lo}..{hi}: {r['tokens_per_round']:.2f} tokens/round, proposing in "
                    f"{r['proposing_share']:.0%} of rounds, acceptance {r['acceptance_rate'] or 0:.2f}"
                )
        out["sets"][source] = {"prompts": len(ids), "cells": cells}
    write_json(out, RESULTS / "ngram_replay.json")
    plot(out)


def plot(out: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(out["sets"])
    names = list(out["sets"][sets[0]]["cells"])
    fig, ax = plt.subplots(figsize=(12, 4.5))
    w = 0.8 / len(names)
    for i, n in enumerate(names):
        ax.bar(np.arange(len(sets)) + i * w, [out["sets"][s]["cells"][n]["tokens_per_round"] for s in sets], w, label=n)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(sets)) + 0.4, [s.replace("spec-bench:", "") for s in sets], rotation=30, ha="right")
    ax.set_ylabel("tokens per round (replay)")
    ax.set_title(
        f"prompt lookup replayed on {out['target']}'s greedy continuations ({out['new_tokens']} tokens)", fontsize=9
    )
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(RESULTS / "ngram_replay.png", dpi=110)
    log(f"wrote {RESULTS / 'ngram_replay.png'}")


if __name__ == "__main__":
    main()
