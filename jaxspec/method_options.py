"""The methods' options, each declared once with its type, choices, default and help: the registry
(methods.py) says which method takes which, the command line (cli_methods.py) makes a flag of each."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable


def _head_cost(text: str):
    """--head-cost: layers (a number) or 'weights'."""
    if text == "weights":
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r}: layers (a number) or 'weights'") from None


def exits_option(text):
    """--exits: comma-separated layer counts, 'spread' or 'all'."""
    if text is None or text in ("spread", "all"):
        return text or "spread"
    if not isinstance(text, str):
        return tuple(text)
    try:
        return tuple(int(e) for e in text.split(","))
    except ValueError:
        raise ValueError(f"--exits {text!r}: comma-separated layer counts, 'spread' or 'all'") from None


@dataclasses.dataclass(frozen=True)
class Option:
    """A method option: `name` is the Python keyword (`resolve(..., exit_layer=4)`), `--exit-layer` the
    flag. `type` None: a switch (default False). `default` None: the drafter's own default."""

    name: str
    help: str
    type: Callable | None = int
    choices: tuple = ()
    default: Any = None
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def given(self, value) -> bool:
        return value is not None and value is not False  # 0 is given


_O = Option
OPTIONS: dict[str, Option] = {
    o.name: o
    for o in (
        _O("exit_layer", "draft with the model's first E layers (1..L-1)", metavar="E"),
        _O(
            "exits",
            "candidate exit layers, comma-separated, 'spread' (default: up to 8 over the depth) or 'all' "
            "(1..L-1, the official set)",
            str,
        ),
        _O(
            "faithful",
            "reproduce the official code's quirks (draft even when TPL says plain decoding, NaN τ, no clipping)",
            None,
        ),
        _O(
            "head_cost",
            "with --cost layers, the LM head's cost in layers in TPL's denominator: a number (default 0, "
            "the official count) or 'weights' (its weights over a layer's); implies --cost layers",
            _head_cost,
        ),
        _O(
            "cost",
            "TPL's cost model: measured (default: a round's pieces timed on this machine, 0.5-2 min the first "
            "time, then read from $JAXSPEC_CACHE/round_cost; exits that cannot beat plain decoding here are "
            "dropped) or layers (the official count; implied by --faithful or --head-cost)",
            str,
            ("layers", "measured"),
        ),
        _O(
            "remeasure_cost",
            "time the round cost again and overwrite the kept file (the measured cost model only)",
            None,
        ),
        _O("dispatch", "how the exit is chosen on device", str, ("segments", "switch")),
        _O(
            "probe",
            "while plain decoding wins, the longest gap between the rounds that gather statistics "
            "(default 32; 1 = all)",
        ),
        _O("probe_exits", "candidate exits a probe observes (default 2, those TPL could pick next; 0 = all)"),
        _O("context", "prompt positions seeding the statistics (default 1, 8 with --cost layers; the official 32)"),
        _O("max_ngram", "the longest n-gram looked up", default=3),
        _O(
            "min_ngram",
            "the shortest n-gram looked up (1-grams propose on any repeated token and lose where text "
            "does not repeat: docs/lookup.md)",
            default=2,
        ),
        _O(
            "min_match",
            "a lookup proposing at least this many tokens serves the round without the draft model "
            "(default 3, or -k when -k is smaller: docs/lookup.md, 'The cascade's defaults')",
        ),
        _O("cascade_extend", "the draft model extends every lookup proposal to -k tokens instead", None),
        _O("parallel", "layers per parallel group, N", default=4),
        _O("head", "leading sequential layers", default=1),
        _O("tail", "trailing sequential layers", default=1),
        _O(
            "calibration",
            "when the draft's KV cache is recalibrated by the exact pass",
            str,
            ("every_round", "every_mismatch", "never", "prefill_only"),
            "every_round",
        ),
        _O("policy", "what a parallel group's layers share", str, ("attn_only", "direct_mlp"), "attn_only"),
        _O("scan_calibration", "calibrate with a lax.scan over stacked layers", None),
    )
}
# the command line's groups of method options (cli.py)
GROUPS = {
    "easyspec": ("parallel", "head", "tail", "calibration", "policy", "scan_calibration"),
    "prompt lookup (ngram, cascade)": ("max_ngram", "min_ngram", "min_match", "cascade_extend"),
    "self-speculation (ls, fs, dv, del)": (
        "exit_layer",
        "exits",
        "faithful",
        "head_cost",
        "cost",
        "remeasure_cost",
        "dispatch",
        "probe",
        "probe_exits",
        "context",
    ),
}
