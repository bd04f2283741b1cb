"""LayerSkip self-speculation (jaxspec/selfspec/layerskip.py): greedy output identical to vanilla over
random tiny targets × exit layer × chain / adaptive chain / tree × batch, the target's one cache left
exactly as vanilla decoding leaves it, acceptance rising with the exit, and its input errors."""

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxspec import init_params, output_ids
from jaxspec.selfspec import LayerSkip
from jaxspec.speculative import Model, chain, make_runner, speculate, tree
from tests.helpers import examples, random_prompts, tiny_cfg
from tests.spec_helpers import TARGET, assert_target_cache_is_vanillas
from tests.test_seam import _run
from tests.test_speculative import N_NEW, SLOTS, vanilla_rows

METHODS = [chain(1), chain(3), chain(6), chain(2, adaptive=True, k_max=6), tree(3, 2), tree(2, 3)]


def target(seed: int):
    return init_params(jax.random.key(seed), TARGET, scale=0.15)


@pytest.mark.slow
@settings(max_examples=examples(15))
@given(
    method=st.sampled_from(range(len(METHODS))),
    exit_layer=st.integers(1, TARGET.num_layers - 1),
    batch=st.integers(1, 3),
    seed=st.integers(0, 3),
    data=st.data(),
)
def test_greedy_layerskip_equals_vanilla(method, exit_layer, batch, seed, data):
    tp = target(seed)
    lengths = data.draw(st.lists(st.integers(1, 32), min_size=batch, max_size=batch))
    prompts = random_prompts(np.random.default_rng(data.draw(st.integers(0, 2**16))), lengths)
    state = _run(tp, None, prompts, METHODS[method], LayerSkip(exit_layer).bind(TARGET), eos=(7,))
    assert output_ids(state) == vanilla_rows(tp, prompts)


@pytest.mark.parametrize("method", [chain(4), tree(3, 2)], ids=["chain4", "tree3x2"])
def test_the_one_cache_equals_vanilla_decoding(method):
    tp = target(5)
    prompts = random_prompts(np.random.default_rng(5), [3, 19, 30])
    state = _run(tp, None, prompts, method, LayerSkip(1).bind(TARGET))
    outs = output_ids(state)
    assert outs == vanilla_rows(tp, prompts, eos=())
    assert_target_cache_is_vanillas(state.target_cache, tp, TARGET, prompts, outs, SLOTS)


def test_deeper_exits_accept_more():
    """With the last layers damped the early exits agree more with the target the deeper they are."""
    cfg = tiny_cfg(num_layers=6)
    tp = init_params(jax.random.key(1), cfg, scale=0.15)
    layers = [dict(l, wo=l["wo"] * s, w_down=l["w_down"] * s) for l, s in zip(tp["layers"], [1, 1, 0.5, 0.3, 0.2, 0.1])]
    tp = dict(tp, layers=layers)
    prompts = random_prompts(np.random.default_rng(2), [9, 17])
    rates = []
    for E in (1, 3, 5):
        out = speculate(Model(tp, cfg), None, prompts, method=chain(4), max_new_tokens=N_NEW, drafter=LayerSkip(E))
        rates.append(out.stats["acceptance_rate"])
    assert rates[0] < rates[1] < rates[2], rates


def test_layerskip_input_errors():
    tp = target(0)
    for bad in (0, TARGET.num_layers, -1, 2.5):
        with pytest.raises(ValueError, match="exit layer"):
            LayerSkip(bad).bind(TARGET)
    with pytest.raises(ValueError, match="not bound"):
        LayerSkip(1).bound_cfg
    with pytest.raises(ValueError, match="no draft model"):  # a self-drafter given a draft model
        speculate(Model(tp, TARGET), Model(tp, TARGET), [[1, 2, 3]], method=chain(2), drafter=LayerSkip(1))
    with pytest.raises(ValueError, match="needs a draft model"):
        make_runner(Model(tp, TARGET), None, chain(2), max_new_tokens=4, max_len=64)
    runner = make_runner(Model(tp, TARGET), None, chain(2), max_new_tokens=4, max_len=64, drafter=LayerSkip(2))
    assert runner.run([[1, 2, 3]]).output_ids == [vanilla_rows(tp, [[1, 2, 3]], eos=())[0][:4]]
