"""The method registry (jaxspec/methods.py) is the one source of every method's defaults: the command
line, `speculate(method=NAME)`, a bare drafter's default shape and the README's table agree with it; a
shape or option a method cannot take is refused before anything is bound, compiled or measured; the
drafter seam declares every member (a misspelled hook is an error)."""

from pathlib import Path

import jax
import numpy as np
import pytest

from jaxspec import DecodeSpec, generate, methods, output_ids
from jaxspec.cli import build_parser
from jaxspec.cli_methods import resolve as cli_resolve
from jaxspec.easyspec import EasySpec
from jaxspec.selfspec import DEL, FSM, DraftVerify, LayerSkip
from jaxspec.speculative import Cascade, DraftModel, Model, NGram, chain, speculate, tree
from jaxspec.speculative.api import resolve_method
from jaxspec.speculative.seam import Drafter
from tests.spec_helpers import DRAFT, TARGET, make_pair

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {c.__name__: c for c in (DraftModel, EasySpec, LayerSkip, FSM, DraftVerify, DEL, NGram, Cascade)}


def _cli(name, *extra):
    need = {"required": ["--draft", "d"], "either": ["--draft", "d"]}.get(methods.get(name).draft_model, [])
    req = ["--exit-layer", "2"] if "exit_layer" in methods.get(name).required else []
    return build_parser().parse_args(["generate", "--model", "m", "--method", name, *need, *req, *extra])


@pytest.mark.parametrize("name", list(methods.METHODS))
def test_the_cli_and_python_resolve_a_name_to_the_same_shape_and_drafter(name):
    info = methods.get(name)
    opts = {"exit_layer": 2} if "exit_layer" in info.required else {}
    py = methods.resolve(name, draft=info.draft_model != "none", **opts)
    cli = cli_resolve(_cli(name))
    assert cli == py
    if info.shapes:  # the shape a bare drafter of this kind gets by default is the registry's
        assert py.method.shape.depth == (methods.FS_CAP if name == "fs" else info.k) or py.method.shape.width > 1
        drafter = py.drafter if py.drafter is not None else DraftModel()
        if name not in ("tree",):  # a bare DraftModel's method is the chain
            assert resolve_method(None, drafter)[0] == py.method
        assert set(info.shapes) <= CLASSES[info.drafter].shapes, (name, info.shapes)


def test_defaults_are_the_registrys():
    assert resolve_method(None, None)[0] == chain(7)
    assert resolve_method(None, DEL())[0] == chain(18)  # was chain(4) in speculate, chain(18) on the CLI
    assert resolve_method(None, NGram())[0] == chain(4)
    assert resolve_method(None, EasySpec())[0] == tree(5, 2)
    assert methods.resolve("ngram").drafter == NGram(3, 2)
    assert cli_resolve(_cli("ngram")).drafter == NGram(3, 2)
    assert cli_resolve(_cli("del", "-k", "6")).method == chain(6)
    assert cli_resolve(_cli("fs", "-k", "3")).method == chain(methods.FS_CAP)
    assert cli_resolve(_cli("fs", "-k", "3")).drafter.start == 3
    assert cli_resolve(_cli("chain", "--adaptive", "-k", "3")).method == chain(3, adaptive=True)
    assert cli_resolve(_cli("easyspec", "--width", "1", "-k", "5")).method == chain(5)
    assert cli_resolve(_cli("easyspec", "--parallel", "2")).drafter == EasySpec(parallel=2)


def test_a_drafter_built_with_its_own_defaults_is_the_registrys():
    """`NGram()` / `Cascade()` by hand, `--method ngram / cascade` and `method="ngram" / "cascade"` are one
    configuration, on the same default shape (the cascade's k is the chain's: it is the chain plus a lookup
    gate, measured in docs/lookup.md)."""
    assert methods.resolve("ngram").drafter == NGram()
    assert methods.resolve("cascade", draft=True).drafter == Cascade() == cli_resolve(_cli("cascade")).drafter
    assert Cascade().min_match == Cascade.MIN_MATCH == 3 and NGram().min_ngram == 2
    assert resolve_method(None, Cascade())[0] == chain(7) == methods.resolve("cascade", draft=True).method
    assert methods.resolve("cascade", draft=True, k=2).drafter.min_match == 2  # the whole chain when k is shorter
    assert methods.resolve("cascade", draft=True, k=5, min_match=1).drafter.min_match == 1
    with pytest.raises(ValueError, match=r"min_match \(3\) exceeds the chain's k \(2\).*--min-match"):
        methods.resolve("cascade", draft=True, k=2, min_match=3)
    with pytest.raises(ValueError, match="exceeds the chain's k"):  # refused before anything is traced
        Cascade().check_method(chain(2))
    Cascade(extend=True).check_method(chain(2))  # extend mode has no gate: the model continues any proposal


@pytest.mark.parametrize(
    "name,kw,msg",
    [
        ("chain", dict(exits="3,4"), "--exits is a DEL option: it does nothing for --method chain"),
        ("ls", dict(exit_layer=2, max_ngram=2), "--max-ngram is an ngram / cascade option"),
        ("del", dict(exit_layer=4), "--method del chooses its exit layer itself"),
        ("ls", dict(), "--method ls needs --exit-layer E"),
        ("chain", dict(bogus=1), "unknown option 'bogus'"),
        ("ngram", dict(adaptive=True), "not a tree or an adaptive chain"),
        ("ngram", dict(vocab=object()), "--draft-vocab trims a draft's LM head"),
        ("dv", dict(exit_layer=2, k=0), "-k must be >= 1 for --method dv"),
        ("tree", dict(narrow=False), "verifies a tree's whole block every round"),
        ("vanilla", dict(narrow=False), "--method vanilla verifies nothing"),
        ("fly", dict(), "unknown method 'fly': one of vanilla, chain"),
    ],
)
def test_a_method_refuses_what_it_cannot_take(name, kw, msg):
    with pytest.raises(ValueError, match=msg):
        methods.resolve(name, **kw)


def test_a_shape_the_drafter_cannot_draft_is_refused_before_its_cost_is_measured(monkeypatch):
    """DEL with a tree used to fail at trace time, after 25-110 s of timing its round cost."""

    def measured(*a, **k):
        raise AssertionError("the cost was measured")

    monkeypatch.setattr(DEL, "calibrate", measured)
    tp, _ = make_pair(0, 1.0)
    for drafter, msg in (
        (DEL(), "DEL drafts a chain whose length"),
        (NGram(), "NGram proposes one continuation"),
        (FSM(2), "FSM moves its own draft length"),
    ):
        with pytest.raises(ValueError, match=msg):
            speculate(Model(tp, TARGET), None, [[1, 2, 3]], method=tree(3, 2), drafter=drafter, max_new_tokens=4)
    with pytest.raises(ValueError, match="options go with a method name"):
        speculate(Model(tp, TARGET), None, [[1, 2, 3]], method=chain(3), options={"exit_layer": 2})


def test_a_name_works_as_well_as_a_shape():
    """`method="chain"` used to fail with an AttributeError; names now run the registry's method, equal to
    vanilla greedy decoding."""
    tp, dp = make_pair(3, 0.5)
    prompts = [[5, 9, 3, 11], [2, 8]]
    want = []
    for p in prompts:
        toks = np.asarray([p])
        want += output_ids(generate(tp, toks, np.asarray([len(p)]), jax.random.key(0), spec=DecodeSpec(TARGET, 12, 64)))
    t, d = Model(tp, TARGET), Model(dp, DRAFT)
    for name, draft, opts in (
        ("chain", d, None),
        ("ngram", None, None),
        ("ls", None, {"exit_layer": 2}),
        ("cascade", d, {"min_match": 2}),
    ):
        out = speculate(t, draft, prompts, method=name, options=opts, max_new_tokens=12)
        assert out.output_ids == want, name
    with pytest.raises(ValueError, match="--method chain needs --draft NAME"):
        speculate(t, None, prompts, method="chain", max_new_tokens=4)


def test_a_misspelled_hook_is_an_error():
    with pytest.raises(TypeError, match="Typo.comit is not a member of the drafter seam: did you mean 'commit'"):

        class Typo(Drafter):
            def comit(self, params, state, out, *, method):
                return state

    with pytest.raises(NotImplementedError, match="does not implement propose"):
        Drafter().propose(None, None, None, None, None, method=None, sampling=None)


def test_the_readme_table_is_the_registrys():
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- methods:begin -->\n", 1)[1].split("<!-- methods:end -->", 1)[0]
    assert block.strip() == methods.method_table(), "regenerate it: python -m jaxspec.methods"
    for m in methods.METHODS.values():
        assert (ROOT / "docs" / m.doc).is_file(), m.doc


def test_the_cli_choices_and_option_flags_are_the_registrys():
    p = build_parser()
    gen = p._subparsers._group_actions[0].choices["generate"]
    flags = {s for a in gen._actions for s in a.option_strings}
    assert {o.flag for o in methods.OPTIONS.values()} <= flags
    method = next(a for a in gen._actions if "--method" in a.option_strings)
    assert method.choices == list(methods.METHODS)
