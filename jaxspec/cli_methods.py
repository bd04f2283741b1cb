"""The command line's method flags, made from the method registry (jaxspec/methods.py): `--method`,
the shape flags (-k, --adaptive, --depth, --width, --full-width), every method option as a flag in its
group, and their resolution to a shape and a drafter — every check made before anything loads."""

from __future__ import annotations

import argparse

from jaxspec import methods
from jaxspec.method_options import GROUPS, OPTIONS
from jaxspec.methods import METHODS


def _type(option):
    """argparse's converter: the registry's, its errors as argparse's (exit 2 with the message)."""

    def convert(text):
        try:
            return option.type(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = getattr(option.type, "__name__", "value")
    return convert


def add_method_flags(p: argparse.ArgumentParser) -> None:
    """--method and its shape flags, the hot-vocabulary head, and every registry option in its group."""
    p.add_argument(
        "--method",
        default="vanilla",
        choices=list(METHODS),
        help="; ".join(f"{m.name}: {m.summary}" for m in METHODS.values()),
    )
    ks = ", ".join(f"{m.name} {m.k}" for m in METHODS.values() if m.k is not None)
    p.add_argument(
        "-k",
        type=int,
        default=None,
        help=f"chain: draft tokens per round (the cap for the variable "
        f"ones: fs {methods.FS_CAP} starting at -k, dv, del, ngram, cascade); default per method: {ks}",
    )
    p.add_argument(
        "--adaptive",
        action="store_true",
        help="chain, ls: HF's adaptive k (+2 all accepted, else -1; starts at -k, at most 2k)",
    )
    p.add_argument(
        "--full-width",
        action="store_true",
        help="chains: verify every round at the full 1 + k width "
        "even when fewer tokens were drafted (no width buckets: what they save, measured; they matter for "
        "drafts of varying length: --adaptive, ngram, cascade, fs, dv, del)",
    )
    tree = METHODS["tree"]
    p.add_argument("--depth", type=int, default=None, help=f"tree, easyspec: depth D (default {tree.depth})")
    p.add_argument(
        "--width",
        type=int,
        default=None,
        help=f"tree, easyspec: width K, nodes per depth (default {tree.width}; easyspec with 1: a chain of -k)",
    )
    hot = ", ".join(m.name for m in METHODS.values() if m.hot_vocab)
    p.add_argument(
        "--draft-vocab",
        type=int,
        default=None,
        help=f"{hot}: the draft's LM head keeps only the N most "
        "frequent tokens (a hot-vocabulary head, FR-Spec / VocabTrim; lossless); a self-drafter's is cut "
        "from the model's own head",
    )
    p.add_argument(
        "--draft-vocab-file",
        default=None,
        help="the token frequency file for --draft-vocab (default: "
        "the one shipped in jaxspec/data/hot_vocab/ for the draft's tokenizer)",
    )
    for title, names in GROUPS.items():
        g = p.add_argument_group(title)
        for name in names:
            o = OPTIONS[name]
            who = ", ".join(methods.owners(name))
            text = f"{who}: {o.help}" + (f" (default {o.default})" if o.default is not None else "")
            if o.type is None:
                g.add_argument(o.flag, action="store_true", help=text)
            else:
                g.add_argument(
                    o.flag, type=_type(o), default=None, choices=o.choices or None, help=text, metavar=o.metavar
                )


def _options(args) -> dict:
    return {name: getattr(args, name) for name in OPTIONS}


def _shape(args) -> dict:
    return dict(k=args.k, adaptive=args.adaptive, depth=args.depth, width=args.width, narrow=not args.full_width)


def check(args) -> methods.MethodInfo:
    """Every check of the method flags that needs no file: one clear error before anything loads."""
    info = methods.get(args.method)
    if args.draft_vocab_file is not None and args.draft_vocab is None:
        raise ValueError("--draft-vocab-file needs --draft-vocab N (how many of its tokens the head keeps)")
    if args.draft_vocab is not None and args.draft_vocab <= 0 and info.hot_vocab:
        raise ValueError(f"--draft-vocab must be >= 1 (tokens the draft head keeps), got {args.draft_vocab}")
    methods.validate(args.method, **_shape(args), vocab=args.draft_vocab, draft=bool(args.draft), **_options(args))
    no_model = info.draft_model == "none" or (info.draft_model == "either" and not args.draft)
    if args.draft_sharding is not None and no_model:
        raise ValueError(f"--draft-sharding is for a draft model: --method {args.method} has none")
    return info


def resolve(args) -> methods.Resolved:
    """The shape (None: vanilla) and the drafter (None: a DraftModel) the flags name; the hot-vocabulary
    file is read here (after `check`)."""
    check(args)
    return methods.resolve(
        args.method, **_shape(args), vocab=_hot_vocab(args), draft=bool(args.draft), **_options(args)
    )


def numerics_of(args) -> dict:
    """The numerics flags as load_model / run_bench take them."""
    return dict(dtype=args.dtype, precision=args.precision, cache_dtype=args.cache_dtype, attention=args.attention)


def draft_replicated(args) -> bool:
    """Whether the draft model is loaded whole on every device: EasySpec's always, chain/tree's on request."""
    if args.method == "easyspec" and args.draft_sharding == "tp":
        raise ValueError(
            "EasySpec's draft runs any of its layers on any device of the layer axis: it is replicated, "
            "not --draft-sharding tp"
        )
    return args.method == "easyspec" or args.draft_sharding == "replicated"


def _hot_vocab(args):
    """--draft-vocab N: the draft's N most frequent tokens, from the frequency file made for its tokenizer
    (a self-drafter's: the model's)."""
    if args.draft_vocab is None:
        return None
    from conversion.loader import load_model_tokenizer
    from jaxspec.speculative.hot_vocab import find_file, load_hot_vocab

    tok = load_model_tokenizer(args.draft or args.model)
    return load_hot_vocab(args.draft_vocab_file or find_file(tok), args.draft_vocab, tokenizer=tok)
