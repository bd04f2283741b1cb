"""Hot-vocabulary draft heads (FR-Spec, Zhao et al. 2025; VocabTrim, Goel et al. 2025): the draft's LM
head keeps only the rows of the V' most frequent tokens, so a draft step reads V'·D head weights instead
of V·D — on the Qwen2.5 0.5B (tied 151,936 × 896 head) the head is 28 % of the bytes a step streams.

    vocab = load_hot_vocab(path, 32768, tokenizer=draft.tokenizer, vocab_size=draft.cfg.vocab_size)
    speculate(target, draft, prompts, drafter=DraftModel(vocab=vocab))   # or EasySpec(vocab=vocab)
    speculate(target, None, prompts, drafter=DEL(vocab=vocab))  # any self-drafter: LayerSkip, FSM, DraftVerify

The drafter's `prepare` adds `params["hot_head"]` = {"ids": i32[V'], "w": [V', D]} (`trim_head`); with it
`model.head` computes the V' logits and puts them back at their ids in a full-vocabulary row that is
−inf elsewhere. Everything downstream is unchanged: greedy drafting takes the argmax over the subset;
sampling draws from q renormalised over the subset and 0 outside, and the engine's acceptance rule
(accept x with min(1, p/q), resample from max(p − q, 0)) is exact for any q — so still lossless. A
token outside the subset is never drafted, only emitted by the target (the extra token or a resample).
A self-drafter's head is the target's own, which verification reads whole: its trimmed rows are a copy
(`prepare_for` gathers them from the target's params), and DEL's shadow rows, which share the
verification's head call, are `restrict`ed to the subset instead.

The frequency file (JSON, written by `python -m jaxspec.hot_vocab_file`): counts of each token in text
the *target* generated (VocabTrim found target-generated text a better calibration than raw text or the
draft's own), the sha256 of the tokenizer's (token, id) table it was made with, and where the text came
from; optionally `prior_counts`, token counts of raw text (the held-out prompts themselves), and
`soft_counts`, a model's expected next-token counts over that raw text (the softmax at every position,
summed: every token the text makes likely gets weight, not only those it contains). Ranking: generated
count, most frequent first; ties (every token the target never generated among them) by the prior count,
then by the soft count, then by id, lowest first — a byte-level BPE vocabulary's ids follow its merge
order, which follows the tokenizer corpus's pair counts. A few thousand generated tokens rank only a few
thousand ids and raw text a few thousand more; without the soft counts the rest of a 32K-64K head is
ranked by id alone, and the tokens it then misses cost acceptance (measured in the README)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Iterable

import jax.numpy as jnp
import numpy as np

FORMAT = "jaxspec-hot-vocab/1"
ASSET_DIR = Path(__file__).resolve().parents[1] / "data" / "hot_vocab"  # the files shipped as package data


def vocab_hash(tokenizer) -> str:
    """sha256 of the tokenizer's (token, id) table (added tokens included): a frequency file is only
    valid for the table it was counted with."""
    table = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(table, ensure_ascii=False).encode()).hexdigest()


def count_tokens(sequences: Iterable[Iterable[int]]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for seq in sequences:
        for t in seq:
            counts[int(t)] = counts.get(int(t), 0) + 1
    return counts


def _dense(counts: dict[int, float] | None, vocab_size: int, dtype=np.int64) -> np.ndarray:
    c = np.zeros(vocab_size, dtype)
    for t, n in (counts or {}).items():
        c[t] = n
    return c


def rank(
    counts: dict[int, int], vocab_size: int, prior: dict[int, int] | None = None, soft: dict[int, float] | None = None
) -> np.ndarray:
    """Every token id, most frequent first; ties and unseen tokens by the prior count, then by the soft
    count, then by id (the module docstring)."""
    c, p, s = _dense(counts, vocab_size), _dense(prior, vocab_size), _dense(soft, vocab_size, np.float64)
    return np.lexsort((np.arange(vocab_size), -s, -p, -c)).astype(np.int32)  # last key first


def coverage(order: np.ndarray, tokens: Iterable[int], sizes: Iterable[int]) -> dict[int, float]:
    """The share of `tokens` (e.g. held-out target outputs) among the first n ranked ids, per n."""
    pos = np.empty_like(order)
    pos[order] = np.arange(order.size)
    at = pos[np.fromiter(tokens, np.int64)]
    return {int(n): float(np.mean(at < n)) if at.size else float("nan") for n in sizes}


def _pairs(counts: dict, value=int) -> list[list]:
    return [[int(t), value(counts[t])] for t in sorted(counts, key=lambda t: (-counts[t], t))]


def _soft_value(x) -> float:
    return float(f"{float(x):.6g}")  # 6 significant digits: the order survives, the file stays small


def write_frequencies(
    path,
    counts: dict[int, int],
    tokenizer,
    vocab_size: int,
    source: dict,
    prior: dict[int, int] | None = None,
    soft: dict[int, float] | None = None,
) -> dict:
    """The frequency file for `counts` (token id → occurrences in target-generated text), an optional
    `prior` (occurrences in raw text: the order among tokens the counts tie on) and optional `soft`
    expected counts (positive: the order among tokens the prior ties on)."""
    if any(not 0 <= t < vocab_size for t in list(counts) + list(prior or {}) + list(soft or {})):
        raise ValueError(f"token ids outside the vocabulary of {vocab_size} in the counts")
    if soft and not all(np.isfinite(x) and x > 0 for x in soft.values()):
        raise ValueError("soft counts must be finite and positive (leave out the tokens that have none)")
    doc = {
        "format": FORMAT,
        "vocab_hash": vocab_hash(tokenizer),
        "vocab_size": vocab_size,
        "source": source,
        "tokens_counted": int(sum(counts.values())),
        "distinct": len(counts),
        "counts": _pairs(counts),
    }
    if prior:
        doc["prior_counts"] = _pairs(prior)
    if soft:
        doc["soft_counts"] = _pairs(soft, _soft_value)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)  # never a half-written file
    return doc


@dataclasses.dataclass(frozen=True, eq=False)
class HotVocab:
    """The V' token ids a draft head keeps (ascending: the trimmed head's rows in vocabulary order).
    Static in a drafter (hashed by content, not by identity)."""

    ids: np.ndarray  # i32[V']
    vocab_size: int
    file: str = ""

    @functools.cached_property
    def digest(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.ids, np.int32).tobytes()).hexdigest()

    def __hash__(self) -> int:
        return hash((self.digest, self.vocab_size))

    def __eq__(self, other) -> bool:
        return isinstance(other, HotVocab) and (self.digest, self.vocab_size) == (other.digest, other.vocab_size)

    @property
    def size(self) -> int:
        return int(self.ids.size)

    def describe(self) -> dict:
        return {"size": self.size, "vocab_size": self.vocab_size, "file": self.file}


def hot_vocab(
    counts: dict[int, int],
    size: int,
    vocab_size: int,
    file: str = "",
    prior: dict[int, int] | None = None,
    soft: dict[int, float] | None = None,
) -> HotVocab:
    """The `size` top-ranked ids of `counts` (ties by `prior`, then `soft`, then id) as a HotVocab."""
    if not 1 <= size <= vocab_size:
        raise ValueError(f"draft vocabulary size {size}: it must be in 1..{vocab_size} (the model's vocabulary)")
    return HotVocab(np.sort(rank(counts, vocab_size, prior, soft)[:size]), vocab_size, file)


def file_ranking(doc: dict) -> tuple[dict, dict, dict]:
    """(counts, prior, soft) of a loaded frequency file, the arguments of `rank` / `hot_vocab`."""
    return (
        {t: n for t, n in doc["counts"]},
        {t: n for t, n in doc.get("prior_counts", [])},
        {t: x for t, x in doc.get("soft_counts", [])},
    )


def find_file(tokenizer, root: Path = ASSET_DIR) -> Path:
    """The shipped frequency file made for this tokenizer (matched by its vocabulary hash)."""
    h = vocab_hash(tokenizer)
    for p in sorted(Path(root).glob("*.json")):
        if json.loads(p.read_text()).get("vocab_hash") == h:
            return p
    raise ValueError(
        f"no hot-vocabulary frequency file for this tokenizer (vocab hash {h[:12]}…) in {root}: "
        "make one with `python -m jaxspec.hot_vocab_file --model TARGET` or give the file's path"
    )


def load_hot_vocab(path, size: int, *, tokenizer=None, vocab_size: int | None = None) -> HotVocab:
    """The top `size` tokens of a frequency file, checked against the draft's tokenizer (its vocabulary
    hash) and vocabulary size: a file made for another tokenizer would keep the wrong rows."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read the hot-vocabulary file {path}: {e}") from None
    if doc.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a hot-vocabulary frequency file (format {doc.get('format')!r}, expected {FORMAT!r})"
        )
    if vocab_size is not None and doc["vocab_size"] != vocab_size:
        raise ValueError(f"{path} was made for a vocabulary of {doc['vocab_size']} tokens, the draft has {vocab_size}")
    if tokenizer is not None and doc["vocab_hash"] != vocab_hash(tokenizer):
        raise ValueError(
            f"{path} was made for another tokenizer (vocabulary hash {doc['vocab_hash'][:12]}… , this "
            f"one {vocab_hash(tokenizer)[:12]}…): its frequencies would keep the wrong tokens"
        )
    counts, prior, soft = file_ranking(doc)
    return hot_vocab(counts, size, doc["vocab_size"], path.name, prior, soft)


def trim_head(params: dict, cfg, vocab: HotVocab) -> dict:
    """`params` with `hot_head`: the LM head's rows of the kept tokens (the embedding's, when tied) —
    model.head then computes logits over those tokens only (module docstring)."""
    if vocab.vocab_size != cfg.vocab_size:
        raise ValueError(
            f"the hot vocabulary was made for {vocab.vocab_size} tokens, the draft model has {cfg.vocab_size}"
        )
    w = params["embed"] if cfg.tie_embeddings else params["lm_head"]
    ids = jnp.asarray(vocab.ids, jnp.int32)
    return {**params, "hot_head": {"ids": ids, "w": jnp.take(w, ids, axis=0)}}


def restrict(logits, vocab: HotVocab | None):
    """logits f32[..., V] with every token outside the hot vocabulary at −inf: what the trimmed head gives
    on the same rows (its logits equal the full head's on the kept ids), for rows that go through the full
    head anyway — DEL's shadow rows share the verification's head call, so a hot drafter's would-be
    tokens and their probabilities cost a mask there, not a second head. None: unchanged."""
    if vocab is None:
        return logits
    if vocab.vocab_size != logits.shape[-1]:
        raise ValueError(
            f"the hot vocabulary was made for {vocab.vocab_size} tokens, the logits have {logits.shape[-1]}"
        )
    keep = np.zeros(vocab.vocab_size, bool)
    keep[vocab.ids] = True
    return jnp.where(jnp.asarray(keep), logits, -jnp.inf)
