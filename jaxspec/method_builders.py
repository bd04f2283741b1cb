"""How each registered method's drafter is built from its resolved options (`MethodInfo.build`): one
function per drafter family, given the option values (`o`: every option the method declares, defaults
filled in, plus `k`) and the hot vocabulary (`vocab`, or None). The drafter classes are imported where
they are built, so reading the registry (the CLI's flags, the README's table) loads no method."""

from __future__ import annotations

from jaxspec.method_options import exits_option


def draft_model(o, vocab):
    from jaxspec.speculative import DraftModel

    return DraftModel(vocab=vocab) if vocab is not None else None


def easyspec(o, vocab):
    from jaxspec.easyspec import EasySpec

    return EasySpec(
        parallel=o["parallel"],
        head=o["head"],
        tail=o["tail"],
        policy=o["policy"],
        calibration=o["calibration"],
        scan_calibration=o["scan_calibration"],
        vocab=vocab,
    )


def self_drafter(cls_name):
    def build(o, vocab):
        import jaxspec.selfspec as s

        cls = getattr(s, cls_name)
        if cls_name == "FSM":
            return cls(o["exit_layer"], start=o["k"], vocab=vocab)
        return cls(o["exit_layer"], vocab=vocab)

    return build


def del_(o, vocab):
    from jaxspec.selfspec import DEL

    opts = {k: o[k] for k in ("head_cost", "dispatch", "probe", "probe_exits", "context") if o[k] is not None}
    return DEL(
        exits=exits_option(o["exits"]),
        faithful=o["faithful"],
        cost=o["cost"],
        remeasure=o["remeasure_cost"],
        vocab=vocab,
        **opts,
    )


def ngram(o, vocab):
    from jaxspec.speculative import NGram

    return NGram(o["max_ngram"], o["min_ngram"])


def cascade(o, vocab):
    from jaxspec.selfspec import LayerSkip
    from jaxspec.speculative import Cascade, DraftModel

    fallback = DraftModel(vocab=vocab) if o["exit_layer"] is None else LayerSkip(o["exit_layer"], vocab=vocab)
    if o["exit_layer"] is not None and o["cascade_extend"]:
        raise ValueError(
            "--cascade-extend continues a lookup proposal in a draft model's own cache: it needs "
            "--draft NAME, not --exit-layer"
        )
    # min_match: the measured default (MIN_MATCH), or the whole chain when -k is shorter
    min_match = o["min_match"] if o["min_match"] is not None else min(Cascade.MIN_MATCH, o["k"])
    return Cascade(ngram(o, None), fallback, min_match=min_match, extend=o["cascade_extend"])
