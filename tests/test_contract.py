"""docs/contract.md's example drafter, run as written: its greedy output equals vanilla's, its report
agrees with the engine's statistics, and a shape it does not draft is refused."""

import re
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxspec import DecodeSpec, generate, output_ids
from jaxspec.speculative import Model, chain, speculate, tree
from tests.spec_helpers import TARGET, make_pair

DOC = Path(__file__).resolve().parents[1] / "docs" / "contract.md"


def example_drafter():
    text = DOC.read_text()
    section = text.split("## An example drafter", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert 25 <= len(code.strip().splitlines()) <= 50  # the page promises a short example
    ns = {}
    exec(compile(code, str(DOC), "exec"), ns)
    return ns["Repeat"]


def test_the_documented_example_drafter_is_lossless_and_reports_its_hits():
    Repeat = example_drafter()
    tp, _ = make_pair(5, 1.0)
    prompts = [[3, 3, 3, 3, 9, 9], [4, 1, 4, 1, 4], [7, 2, 7]]
    want = []
    for p in prompts:
        want += output_ids(
            generate(tp, np.asarray([p]), np.asarray([len(p)]), jax.random.key(0), spec=DecodeSpec(TARGET, 16, 64))
        )
    out = speculate(Model(tp, TARGET), None, prompts, method=chain(3), drafter=Repeat(), max_new_tokens=16)
    assert out.output_ids == want
    hits = out.state.draft_state.tolist()  # the drafter's own count: rounds with an accepted draft
    for i, row in enumerate(out.per_row):
        assert hits[i] == row["rounds"] - row["histogram"][0], (i, hits, row)
    with pytest.raises(ValueError, match="Repeat repeats one token: use chain"):
        speculate(Model(tp, TARGET), None, prompts, method=tree(2, 2), drafter=Repeat(), max_new_tokens=4)
