"""The method registry: every decoding method by name, with its default shape, whether it needs a draft
model, the shapes and options it takes (each with its default and help), and how its drafter is built.

One table, read by everything that names a method: the command line's `--method` choices, flags and
checks (cli.py), `speculate(method="del")` (a name works as well as a shape), `bench`, and the README's
method table (`method_table()`). Adding a method is one `MethodInfo` below. A shape or option a method
cannot take is one clear ValueError from `resolve`, before anything loads, compiles or measures.

Where the defaults come from (the Qwen2.5-Coder pair, the 0.5B drafting for the 1.5B, on CPU):
the chain's k = 7 and the trees' 5 x 2 from the k sweep (docs/speculative.md), ngram's k = 4 and 3..2-grams
from the n / k grid, the cascade's k = 7 and min_match 3 head to head against the default chain and held
out (docs/lookup.md), the self-drafters' cap of 18 from the papers. The table with each default's evidence,
the head-to-head rule (no default below the default chain on a set where both run) and where each method
stands against it: docs/cli.md "Method defaults and where they come from"."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from jaxspec import method_builders as builders
from jaxspec.method_options import GROUPS, OPTIONS, Option  # noqa: F401 (Option, GROUPS: re-exported)
from jaxspec.speculative.engine import SpecMethod, chain, tree

CHAIN, ADAPTIVE, TREE = "chain", "adaptive", "tree"  # the shapes: a chain of k, an adaptive chain, a tree
FS_CAP = 18  # fs: the chain's static cap (the official FS has none; its γ rarely passes ~10)


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    """A method: `draft_model` "required", "none", or "either" (a draft model or --exit-layer: cascade);
    `shapes` it drafts (CHAIN, ADAPTIVE, TREE; () for vanilla); the default chain length `k` (a
    variable-depth chain's cap) or tree `depth` x `width`; `options` (names in OPTIONS) and `required`
    ones; `build(options, vocab)` → its drafter (None: the default DraftModel); `refuse`: a method's own
    word for an option it does not take."""

    name: str
    title: str
    summary: str
    doc: str  # its page in docs/
    draft_model: str
    shapes: tuple[str, ...]
    k: int | None = None
    depth: int = 5
    width: int = 2
    options: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    hot_vocab: bool = True  # --draft-vocab trims its draft head (a draft model's or the model's own exits')
    variable: bool = False  # drafts at most k a round (its drafter decides how many)
    headline: str = ""  # one measured number for the README's table, with the docs anchor that holds it
    build: Callable | None = None
    drafter: str = "DraftModel"  # the class its drafter is (default_for: the method a bare drafter runs)
    refuse: tuple[tuple[str, str], ...] = ()

    def method(
        self,
        *,
        k: int | None = None,
        adaptive: bool = False,
        depth: int | None = None,
        width: int | None = None,
        narrow: bool = True,
    ) -> SpecMethod | None:
        """The shape: a chain of `k` (default: the method's), adaptive when asked, or a tree."""
        if not self.shapes:
            if not narrow:
                raise ValueError(
                    f"full-width verification is a chain's setting (its width buckets): --method "
                    f"{self.name} verifies nothing"
                )
            return None
        k = self.k if k is None else k
        if adaptive and ADAPTIVE not in self.shapes:
            raise ValueError(f"--method {self.name} drafts {self._shape_text()}: not a tree or an adaptive chain")
        is_tree = TREE in self.shapes and (CHAIN not in self.shapes or (width if width is not None else self.width) > 1)
        if is_tree:
            if not narrow:
                raise ValueError(
                    f"full-width verification is a chain's setting (its width buckets): --method "
                    f"{self.name} verifies a tree's whole block every round"
                )
            return tree(self.depth if depth is None else depth, self.width if width is None else width)
        if self.name == "fs":
            return chain(max(FS_CAP, k), narrow=narrow)
        return chain(k, adaptive=adaptive, narrow=narrow)

    def _shape_text(self) -> str:
        return {
            (CHAIN,): "a chain of at most -k tokens",
            (CHAIN, ADAPTIVE): "a chain of -k tokens (or an adaptive one)",
            (TREE,): "a --depth x --width tree",
            (CHAIN, TREE): "a tree, or a chain with --width 1",
        }.get(self.shapes, ", ".join(self.shapes))


DEL_OPTIONS = (
    "exits",
    "faithful",
    "head_cost",
    "cost",
    "remeasure_cost",
    "dispatch",
    "probe",
    "probe_exits",
    "context",
)
EASYSPEC_OPTIONS = GROUPS["easyspec"]
METHODS: dict[str, MethodInfo] = {
    m.name: m
    for m in (
        MethodInfo(
            "vanilla",
            "vanilla",
            "plain greedy / sampled decoding of the target",
            "design.md",
            "none",
            (),
            hot_vocab=False,
            headline=(
                "4.34 tok/s, 1.02× HF torch, 0.90 of the machine's read bandwidth "
                "([speculative](docs/speculative.md#the-baseline-vanilla-decoding))"
            ),
        ),
        MethodInfo(
            "chain",
            "draft-model chain",
            "a draft model proposes a chain of -k tokens (--adaptive: HF's "
            "adaptive k, +2 when all accepted, else -1, within [1, 2k])",
            "speculative.md",
            "required",
            (CHAIN, ADAPTIVE),
            k=7,
            build=builders.draft_model,
            headline=(
                "2.01× end to end at k = 15, chat HumanEval; 1.27× pooled over 13 Spec-Bench categories at k = 3 "
                "([speculative](docs/speculative.md#results-chains-and-trees))"
            ),
        ),
        MethodInfo(
            "tree",
            "draft-model tree",
            "a draft model proposes a top-K tree (--depth x --width)",
            "speculative.md",
            "required",
            (TREE,),
            build=builders.draft_model,
            headline=(
                "1.70× (D = 7, K = 2), chat HumanEval: trees do not pay on this CPU "
                "([speculative](docs/speculative.md#results-chains-and-trees))"
            ),
        ),
        MethodInfo(
            "easyspec",
            "EasySpec",
            "the draft's layers run in parallel groups (a --depth x --width tree; a "
            "chain of -k with --width 1); the draft's cache recalibrated by one exact pass a round",
            "easyspec.md",
            "required",
            (CHAIN, TREE),
            k=7,
            options=EASYSPEC_OPTIONS,
            build=builders.easyspec,
            drafter="EasySpec",
            headline=(
                "acceptance −9 % at N = 4 for the chain (paper ≤ 7 %), ±1 % at N ≤ 3; "
                "1.01× the sequential draft at N = 2 on one device ([easyspec](docs/easyspec.md))"
            ),
        ),
        MethodInfo(
            "ls",
            "LayerSkip",
            "self-speculation: the model's first --exit-layer layers draft a chain of -k in its own KV cache",
            "del.md",
            "none",
            (CHAIN, ADAPTIVE),
            k=7,
            options=("exit_layer",),
            required=("exit_layer",),
            build=builders.self_drafter("LayerSkip"),
            drafter="LayerSkip",
            headline="best static exit 0.783× (0.5B, E22 γ2): exits not trained for early exit ([del](docs/del.md))",
        ),
        MethodInfo(
            "fs",
            "FS",
            f"LayerSkip's draft with the chain's length moved +1/-1 after each round (starts at -k, at most {FS_CAP})",
            "del.md",
            "none",
            (CHAIN,),
            k=7,
            options=("exit_layer",),
            required=("exit_layer",),
            variable=True,
            build=builders.self_drafter("FSM"),
            drafter="FSM",
            headline="0.74× (0.5B, E23, earlier code) ([del](docs/del.md))",
        ),
        MethodInfo(
            "dv",
            "Draft & Verify",
            "the self-draft stopped at the first token below an adapted confidence threshold, at most -k",
            "del.md",
            "none",
            (CHAIN,),
            k=18,
            options=("exit_layer",),
            required=("exit_layer",),
            variable=True,
            build=builders.self_drafter("DraftVerify"),
            drafter="DraftVerify",
            headline="0.72× (0.5B, E23, earlier code) ([del](docs/del.md))",
        ),
        MethodInfo(
            "del",
            "DEL",
            "self-speculation whose exit layer and draft length are chosen every round by tokens per layer, at most -k",
            "del.md",
            "none",
            (CHAIN,),
            k=18,
            options=DEL_OPTIONS,
            variable=True,
            build=builders.del_,
            drafter="DEL",
            refuse=(
                (
                    "exit_layer",
                    "--method del chooses its exit layer itself: drop --exit-layer (--exits sets the candidates)",
                ),
            ),
            headline=(
                "within 5 % of vanilla on every set: 0.977× (0.5B) and 0.984× (1.5B) mean; "
                "paper 2.16–2.62× with trained exits ([del](docs/del.md))"
            ),
        ),
        MethodInfo(
            "ngram",
            "prompt lookup",
            "the -k tokens that followed the last n-gram's most recent earlier "
            "occurrence in the prompt and output; no draft model",
            "lookup.md",
            "none",
            (CHAIN,),
            k=4,
            options=("max_ngram", "min_ngram"),
            hot_vocab=False,
            variable=True,
            build=builders.ngram,
            drafter="NGram",
            headline=(
                "1.14× pooled over 13 Spec-Bench categories, none below 1.0×; 2.44× chat HumanEval; "
                "HF's prompt lookup 0.44× our vanilla ([lookup](docs/lookup.md))"
            ),
        ),
        MethodInfo(
            "cascade",
            "cascade",
            "prompt lookup where it proposes at least --min-match tokens, the --draft "
            "model's chain of -k elsewhere (or the model's first --exit-layer layers'; --cascade-extend: the "
            "draft model continues every lookup proposal)",
            "lookup.md",
            "either",
            (CHAIN,),
            k=7,
            options=("max_ngram", "min_ngram", "min_match", "cascade_extend", "exit_layer"),
            variable=True,
            build=builders.cascade,
            drafter="Cascade",
            headline=(
                "1.14× over 6 held-out sets where the chain gives 1.03×; 2.52× chat HumanEval "
                "([lookup](docs/lookup.md#the-cascades-defaults-the-chains-k-a-lookup-of-at-least-3-tokens))"
            ),
        ),
    )
}


def get(name: str) -> MethodInfo:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: one of {', '.join(METHODS)}")
    return METHODS[name]


def owners(option: str) -> list[str]:
    """The methods that take `option`."""
    return [m.name for m in METHODS.values() if option in m.options]


def check_options(info: MethodInfo, options: dict) -> None:
    """An option the method does not take, or a required one missing: one clear error."""
    refuse = dict(info.refuse)
    for name, value in options.items():
        if name not in OPTIONS:
            raise ValueError(f"unknown option {name!r}; method options: {', '.join(OPTIONS)}")
        if OPTIONS[name].given(value) and name not in info.options:
            if name in refuse:
                raise ValueError(refuse[name])
            who = " / ".join(METHODS[o].title if o in ("del",) else o for o in owners(name))
            article = "an" if who[0] in "aeiofhlmnrsx" else "a"  # read as letters: an ls, an fs
            raise ValueError(
                f"{OPTIONS[name].flag} is {article} {who} option: it does nothing for --method {info.name}"
            )
    for name in info.required:
        if not OPTIONS[name].given(options.get(name)):
            o = OPTIONS[name]
            raise ValueError(f"--method {info.name} needs {o.flag} {o.metavar or 'N'} ({o.help})")


@dataclasses.dataclass(frozen=True)
class Resolved:
    """A method name resolved: its registry entry, the shape (None: vanilla) and the drafter (None: the
    default DraftModel, bound to the draft model by speculate / make_runner)."""

    info: MethodInfo
    method: SpecMethod | None
    drafter: Any


def validate(
    name: str,
    *,
    k: int | None = None,
    adaptive: bool = False,
    depth: int | None = None,
    width: int | None = None,
    narrow: bool = True,
    vocab=None,
    draft: bool | None = None,
    **options,
) -> tuple[MethodInfo, SpecMethod | None]:
    """Every check of a method's name, shape and options that needs no model: (entry, shape). `vocab`:
    a hot vocabulary (or anything not None: one is asked for); `draft`: whether a draft model is given
    (None: unknown — speculate checks it against the drafter)."""
    info = get(name)
    check_options(info, options)
    if vocab is not None and not info.hot_vocab:
        raise ValueError(
            f"--draft-vocab trims a draft's LM head (a draft model's or the model's own exits': "
            f"--method {', '.join(m for m, i in METHODS.items() if i.hot_vocab)}): --method {name} "
            "has none"
        )
    if k is not None and k < (0 if name == "fs" else 1):
        raise ValueError(f"-k must be >= {0 if name == 'fs' else 1} for --method {name}, got {k}")
    _check_draft_model(info, draft, options)
    return info, info.method(k=k, adaptive=adaptive, depth=depth, width=width, narrow=narrow)


def resolve(name: str, *, vocab=None, **kw) -> Resolved:
    """`name`, its shape (`validate`'s k, adaptive, depth, width, narrow) and options → shape and drafter:
    `validate`'s checks, then the drafter's own (its option values and the shape it drafts), before
    anything is loaded, compiled or measured."""
    info, method = validate(name, vocab=vocab, **kw)
    options, k = {n: v for n, v in kw.items() if n in OPTIONS}, kw.get("k")
    o = {n: options.get(n) for n in info.options}
    for n in info.options:
        if o[n] is None:
            o[n] = OPTIONS[n].default
        if OPTIONS[n].type is None:
            o[n] = bool(o[n])
    o["k"] = info.k if k is None else k
    drafter = info.build(o, vocab) if info.build is not None else None
    if drafter is not None and method is not None:
        drafter.check_method(method)
    return Resolved(info, method, drafter)


def _check_draft_model(info: MethodInfo, draft: bool | None, options: dict) -> None:
    if draft is None:
        return
    if info.name == "ngram" and draft:
        raise ValueError("--method ngram drafts from the prompt and output (prompt lookup): drop --draft")
    if info.draft_model == "none" and draft and info.name != "vanilla":
        raise ValueError(f"--method {info.name} drafts with the model's own first layers: drop --draft")
    if info.draft_model == "required" and not draft:
        raise ValueError(f"--method {info.name} needs --draft NAME")
    if info.draft_model == "either":
        if draft == OPTIONS["exit_layer"].given(options.get("exit_layer")):
            raise ValueError(
                f"--method {info.name} falls back on a draft model (--draft NAME) or on the model's own "
                "first layers (--exit-layer E): give one of the two"
            )


def default_for(drafter) -> MethodInfo:
    """The registry entry whose default drafter is of `drafter`'s type (DraftModel: chain)."""
    kind = "DraftModel" if drafter is None else type(drafter).__name__
    for m in METHODS.values():  # the first: DraftModel → chain
        if m.shapes and m.drafter == kind:
            return m
    raise ValueError(f"{kind} is not a registered method's drafter: pass method=chain(k) or tree(depth, width) with it")


def python_call(m: MethodInfo) -> str:
    """How the method is called from Python (the docs' table)."""
    if not m.shapes:
        return 'make_runner(t, None, "vanilla", ...)'
    draft = "d" if m.draft_model in ("required", "either") else "None"
    opts = ", ".join(f'"{o}": {24 if o == "exit_layer" else "..."}' for o in m.required)
    return f'speculate(t, {draft}, ids, method="{m.name}"' + (f", options={{{opts}}})" if opts else ")")


def shape_text(m: MethodInfo) -> str:
    s = m.method()
    if s is None:
        return "—"
    if s.shape.width > 1:
        return f"tree {s.shape.depth}x{s.shape.width}"
    return f"chain of {'at most ' if m.variable else ''}{s.shape.depth}" + (
        f", starting at {m.k}" if m.name == "fs" else ""
    )


def method_table() -> str:
    """The README's method table, one row per method, from this registry (`python -m jaxspec.methods`
    prints it; tests/test_methods.py checks the README holds it)."""
    rows = ["| method | CLI | Python | draft model | default shape | headline |", "|---|---|---|---|---|---|"]
    for m in METHODS.values():
        need = {"required": "yes", "none": "no", "either": "yes, or --exit-layer"}[m.draft_model]
        rows.append(
            f"| {m.title} | `--method {m.name}` | `{python_call(m)}` | {need} | {shape_text(m)} | {m.headline} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(method_table())
