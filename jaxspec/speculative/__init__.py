"""Speculative decoding: the engine (one on-device loop), drafters, tree growth, acceptance, metrics."""

from jaxspec.speculative.api import Model, SpecOutput, check_vocab, make_spec, pad_for, speculate
from jaxspec.speculative.cascade import Cascade
from jaxspec.speculative.drafters import DraftModel
from jaxspec.speculative.engine import (
    SpecMethod,
    SpecSpec,
    SpecState,
    chain,
    draft_phase,
    run_speculation,
    spec_loop,
    spec_prefill,
    tree,
    verify_phase,
)
from jaxspec.speculative.hot_vocab import HotVocab, load_hot_vocab
from jaxspec.speculative.metrics import SpecStats, merge, summarize
from jaxspec.speculative.ngram import NGram
from jaxspec.speculative.runner import SpecRunner, make_runner
from jaxspec.speculative.seam import Drafter, HeadRows, Outcome, Round, Target
from jaxspec.speculative.tree import Tree, TreeShape

__all__ = [
    "Model",
    "SpecOutput",
    "check_vocab",
    "make_spec",
    "pad_for",
    "speculate",
    "DraftModel",
    "HotVocab",
    "load_hot_vocab",
    "NGram",
    "Cascade",
    "SpecMethod",
    "SpecSpec",
    "SpecState",
    "chain",
    "draft_phase",
    "run_speculation",
    "spec_loop",
    "spec_prefill",
    "tree",
    "verify_phase",
    "SpecStats",
    "merge",
    "summarize",
    "SpecRunner",
    "make_runner",
    "Tree",
    "TreeShape",
    "Drafter",
    "HeadRows",
    "Outcome",
    "Round",
    "Target",
]
