"""The command line's method flags resolved: `--method` / `-k` / tree shape → a `SpecMethod`, the drafter
flags → a drafter (NGram, a self-drafter, EasySpec, a hot-vocabulary DraftModel), and the checks that a
flag fits its method (one clear error before anything loads). Used by cli.py."""
from __future__ import annotations


FS_CAP = 18  # fs: the chain's static cap (the official FS has none; its γ rarely passes ~10)


def _k(args) -> int:
    k = args.k if args.k is not None else (18 if args.method in ("dv", "del") else 4 if args.method in ("ngram", "cascade") else 7)
    if k < (0 if args.method == "fs" else 1):
        raise ValueError(f"-k must be >= {0 if args.method == 'fs' else 1} for --method {args.method}, got {k}")
    return k


def _method(args):
    from jaxspec.speculative import chain, parse_method
    if args.method == "fs":
        return chain(max(FS_CAP, _k(args)), narrow=not args.full_width)
    return parse_method(args.method, k=_k(args), depth=args.depth, width=args.width, adaptive=args.adaptive,
                        narrow=not args.full_width)


SELF_METHODS = ("ls", "fs", "dv", "del")  # draft with the model's own layers: no --draft
NO_DRAFT = SELF_METHODS + ("ngram",)  # no draft model
HOT_VOCAB_METHODS = ("chain", "tree", "easyspec", "cascade") + SELF_METHODS  # a draft head --draft-vocab trims
DEL_OPTIONS = ("exits", "faithful", "head_cost", "cost", "remeasure_cost", "dispatch", "probe", "probe_exits",
               "context")


def _check_draft(args) -> None:
    given = [o for o in DEL_OPTIONS if getattr(args, o) is not None and getattr(args, o) is not False]  # 0 is given
    if given and args.method != "del":
        raise ValueError(f"--{given[0].replace('_', '-')} is a DEL option: it does nothing for --method {args.method}")
    ngram = [o for o in ("max_ngram", "min_ngram") if getattr(args, o) is not None]
    if ngram and args.method not in ("ngram", "cascade"):
        raise ValueError(f"--{ngram[0].replace('_', '-')} is an ngram / cascade option: it does nothing for "
                         f"--method {args.method}")
    cascade = [o for o in ("min_match", "cascade_extend") if getattr(args, o) not in (None, False)]
    if cascade and args.method != "cascade":
        raise ValueError(f"--{cascade[0].replace('_', '-')} is a cascade option: it does nothing for --method {args.method}")
    no_model = args.method in NO_DRAFT or args.method == "vanilla" or (args.method == "cascade" and not args.draft)
    if args.draft_sharding is not None and no_model:
        raise ValueError(f"--draft-sharding is for a draft model: --method {args.method} has none")
    if args.method == "ngram" and args.draft:
        raise ValueError("--method ngram drafts from the prompt and output (prompt lookup): drop --draft")
    if args.draft_vocab_file is not None and args.draft_vocab is None:
        raise ValueError("--draft-vocab-file needs --draft-vocab N (how many of its tokens the head keeps)")
    if args.draft_vocab is not None:
        if args.method not in HOT_VOCAB_METHODS:
            raise ValueError(f"--draft-vocab trims a draft's LM head (a draft model's or the model's own exits': "
                             f"--method {', '.join(HOT_VOCAB_METHODS)}): --method {args.method} has none")
        if args.draft_vocab <= 0:
            raise ValueError(f"--draft-vocab must be >= 1 (tokens the draft head keeps), got {args.draft_vocab}")
    if args.method in SELF_METHODS:
        if args.draft:
            raise ValueError(f"--method {args.method} drafts with the model's own first layers: drop --draft")
        if args.method == "del" and args.exit_layer is not None:
            raise ValueError("--method del chooses its exit layer itself: drop --exit-layer (--exits sets the "
                             "candidates)")
        if args.method != "del" and args.exit_layer is None:
            raise ValueError(f"--method {args.method} needs --exit-layer E (the model's first E layers draft)")
    elif args.method == "cascade":
        if bool(args.draft) == (args.exit_layer is not None):
            raise ValueError("--method cascade falls back on a draft model (--draft NAME) or on the model's own first "
                             "layers (--exit-layer E): give one of the two")
        if args.exit_layer is not None and args.cascade_extend:
            raise ValueError("--cascade-extend continues a lookup proposal in a draft model's own cache: it needs "
                             "--draft NAME, not --exit-layer")
    elif args.exit_layer is not None:
        raise ValueError(f"--exit-layer is for ls, fs, dv and cascade: it does nothing for --method {args.method}")
    elif args.method not in ("vanilla", "ngram") and not args.draft:
        raise ValueError(f"--method {args.method} needs --draft NAME")


def _numerics(args) -> dict:
    """The numerics flags as load_model / run_bench take them."""
    return dict(dtype=args.dtype, precision=args.precision, cache_dtype=args.cache_dtype, attention=args.attention)


def _draft_replicated(args) -> bool:
    """Whether the draft model is loaded whole on every device: EasySpec's always, chain/tree's on request."""
    if args.method == "easyspec" and args.draft_sharding == "tp":
        raise ValueError("EasySpec's draft runs any of its layers on any device of the layer axis: it is replicated, "
                         "not --draft-sharding tp")
    return args.method == "easyspec" or args.draft_sharding == "replicated"


def _exits(text):
    if text is None or text in ("spread", "all"):
        return text or "spread"
    try:
        return tuple(int(e) for e in text.split(","))
    except ValueError:
        raise ValueError(f"--exits {text!r}: comma-separated layer counts, 'spread' or 'all'") from None


def _hot_vocab(args):
    """--draft-vocab N: the draft's N most frequent tokens, from the frequency file made for its tokenizer
    (a self-drafter's: the model's)."""
    if args.draft_vocab is None:
        return None
    from conversion.loader import load_model_tokenizer
    from jaxspec.speculative.hot_vocab import find_file, load_hot_vocab
    tok = load_model_tokenizer(args.draft or args.model)
    return load_hot_vocab(args.draft_vocab_file or find_file(tok), args.draft_vocab, tokenizer=tok)


def _drafter(args):
    if args.method == "cascade":
        from jaxspec.selfspec import LayerSkip
        from jaxspec.speculative import Cascade, DraftModel, NGram
        return Cascade(NGram(args.max_ngram or 3, args.min_ngram if args.min_ngram is not None else 1),
                       DraftModel(vocab=_hot_vocab(args)) if args.draft else LayerSkip(args.exit_layer,
                                                                                         vocab=_hot_vocab(args)),
                       min_match=args.min_match if args.min_match is not None else 1, extend=args.cascade_extend)
    if args.method in ("chain", "tree") and args.draft_vocab is not None:
        from jaxspec.speculative import DraftModel
        return DraftModel(vocab=_hot_vocab(args))
    if args.method == "ngram":
        from jaxspec.speculative import NGram
        return NGram(args.max_ngram or 3, args.min_ngram if args.min_ngram is not None else 1)
    if args.method in SELF_METHODS:
        from jaxspec.selfspec import DEL, FSM, DraftVerify, LayerSkip
        if args.method == "del":
            opts = {k: getattr(args, k) for k in ("head_cost", "dispatch", "probe", "probe_exits", "context")
                    if getattr(args, k) is not None}
            return DEL(exits=_exits(args.exits), faithful=args.faithful,
                       cost=args.cost, remeasure=args.remeasure_cost, vocab=_hot_vocab(args), **opts)
        if args.method == "fs":
            return FSM(args.exit_layer, start=_k(args), vocab=_hot_vocab(args))
        return (LayerSkip if args.method == "ls" else DraftVerify)(args.exit_layer, vocab=_hot_vocab(args))
    if args.method != "easyspec":
        return None
    from jaxspec.easyspec import EasySpec
    return EasySpec(parallel=args.parallel, head=args.head, tail=args.tail, policy=args.policy,
                    calibration=args.calibration, scan_calibration=args.scan_calibration, vocab=_hot_vocab(args))
