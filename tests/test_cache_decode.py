"""Cached decoding equals one full forward; rollback and masks; vanilla `generate` (greedy, EOS,
sampling, ragged batches) against a step-by-step reference."""

import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxspec import DecodeSpec, SamplingConfig, forward, generate, init_cache, init_params, output_ids, pad_prompts
from jaxspec.decode import bucket, prompt_width
from jaxspec.masks import causal_mask, tree_mask
from jaxspec.model import forward_prompt
from jaxspec.runner import VanillaRunner
from tests.helpers import examples, random_prompts, tiny_cfg

CFG = tiny_cfg()
PARAMS = init_params(jax.random.key(0), CFG, scale=0.15)
fwd = jax.jit(lambda p, t, c, **kw: forward(p, t, c, CFG, **kw))


def full_logits(ids):
    return np.asarray(fwd(PARAMS, jnp.asarray([ids], jnp.int32), init_cache(CFG, 1, 64))[0][0])


def test_forward_prompt_reads_only_the_prompt_slots_and_equals_a_whole_cache_prefill():
    prompts, plens, _ = pad_prompts(random_prompts(np.random.default_rng(3), [5, 13, 9]), CFG, 16)
    toks, lens = jnp.asarray(prompts), jnp.asarray(plens)
    logits, cache = jax.jit(lambda p, t, n, c: forward_prompt(p, t, n, c, CFG))(
        PARAMS, toks, lens, init_cache(CFG, 3, 64)
    )
    ref, ref_cache, _ = fwd(PARAMS, toks, init_cache(CFG, 3, 64), advance=lens, logits_at=(lens - 1)[:, None])
    np.testing.assert_allclose(np.asarray(logits), np.asarray(ref), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(cache.lengths), plens)
    for b, n in enumerate(plens):
        for c, r in zip(cache.k + cache.v, ref_cache.k + ref_cache.v):
            np.testing.assert_allclose(np.asarray(c[b, :, :n]), np.asarray(r[b, :, :n]), atol=1e-5)


def test_prefill_then_steps_equals_full_forward_ragged_batch():
    rng = np.random.default_rng(1)
    lens = [5, 11, 8]
    seqs = random_prompts(rng, [20, 20, 20])
    prompts, plens, _ = pad_prompts([s[:n] for s, n in zip(seqs, lens)], CFG, 16)
    cache = init_cache(CFG, 3, 64)
    logits, cache, _ = fwd(
        PARAMS, jnp.asarray(prompts), cache, advance=jnp.asarray(plens), logits_at=jnp.asarray(plens - 1)[:, None]
    )
    got = [[np.asarray(logits[b, 0])] for b in range(3)]
    for step in range(6):  # feed each row its own next true token
        nxt = jnp.asarray([[seqs[b][lens[b] + step]] for b in range(3)], jnp.int32)
        logits, cache, _ = fwd(PARAMS, nxt, cache)
        for b in range(3):
            got[b].append(np.asarray(logits[b, 0]))
    for b in range(3):
        ref = full_logits(seqs[b][: lens[b] + 6])
        np.testing.assert_allclose(np.stack(got[b]), ref[lens[b] - 1 :], atol=1e-5)
    assert np.asarray(cache.lengths).tolist() == [n + 6 for n in lens]


def test_rollback_then_rewrite_equals_fresh_run():
    ids = list(range(3, 15))
    cache = init_cache(CFG, 1, 32)
    _, cache, _ = fwd(PARAMS, jnp.asarray([ids[:8]]), cache)
    _, cache, _ = fwd(PARAMS, jnp.asarray([[50, 51, 52]]), cache)  # a rejected draft
    cache = cache.rollback(jnp.asarray([8]))
    logits, _, _ = fwd(PARAMS, jnp.asarray([ids[8:]]), cache)
    np.testing.assert_allclose(np.asarray(logits[0]), full_logits(ids)[8:], atol=1e-5)


def test_tree_mask_of_a_chain_is_causal():
    lengths = jnp.asarray([3, 0, 7])
    chain = jnp.tril(jnp.ones((5, 5), bool))
    np.testing.assert_array_equal(tree_mask(lengths, chain, 16), causal_mask(lengths, 5, 16))


def test_tree_forward_matches_per_branch_forward():
    # root r with children a, b; a has child c.  Nodes: [r, a, b, c]; positions by depth.
    prefix = [4, 9, 2, 30]
    r, a, b, c = 11, 12, 13, 14
    anc = jnp.asarray([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]], bool)
    cache = init_cache(CFG, 1, 32)
    _, cache, _ = fwd(PARAMS, jnp.asarray([prefix]), cache)
    pos = jnp.asarray([[4, 5, 5, 6]])
    logits, _, _ = fwd(
        PARAMS, jnp.asarray([[r, a, b, c]]), cache, positions=pos, mask=tree_mask(cache.lengths, anc, 32)
    )
    np.testing.assert_allclose(np.asarray(logits[0, 3]), full_logits(prefix + [r, a, c])[-1], atol=1e-5)
    np.testing.assert_allclose(np.asarray(logits[0, 2]), full_logits(prefix + [r, b])[-1], atol=1e-5)


def test_cache_gather_compacts_a_path():
    cache = init_cache(CFG, 2, 16)
    _, cache, _ = fwd(PARAMS, jnp.asarray([[1, 2, 3, 4, 5, 6]] * 2), cache)
    moved = cache.gather(jnp.asarray([[3, 5], [1, 2]]), jnp.asarray([1, 4]))
    k0, m0 = np.asarray(cache.k[0]), np.asarray(moved.k[0])
    np.testing.assert_array_equal(m0[0, :, 1:3], k0[0][:, [3, 5]])
    np.testing.assert_array_equal(m0[1, :, 4:6], k0[1][:, [1, 2]])
    np.testing.assert_array_equal(m0[0, :, 0], k0[0, :, 0])


def reference_greedy(prompt, n, eos=()):
    seq = list(prompt)
    out = []
    for _ in range(n):
        t = int(np.argmax(full_logits(seq)[-1]))
        out.append(t)
        seq.append(t)
        if t in eos:
            break
    return out


def test_generate_greedy_ragged_batch_matches_reference():
    rng = np.random.default_rng(2)
    prompts = random_prompts(rng, [3, 9, 6, 14])
    arr, lens, slots = pad_prompts(prompts, CFG, 10)
    spec = DecodeSpec(CFG, 10, slots)
    state = generate(PARAMS, jnp.asarray(arr), jnp.asarray(lens), jax.random.key(0), spec=spec)
    got = output_ids(state)
    for p, g in zip(prompts, got):
        assert g == reference_greedy(p, 10)


def test_generate_stops_at_eos_per_row():
    rng = np.random.default_rng(3)
    prompts = random_prompts(rng, [4, 7])
    refs = [reference_greedy(p, 12) for p in prompts]
    eos = refs[0][3]  # the 4th token of row 0 becomes EOS
    arr, lens, slots = pad_prompts(prompts, CFG, 12)
    state = generate(
        PARAMS, jnp.asarray(arr), jnp.asarray(lens), jax.random.key(0), spec=DecodeSpec(CFG, 12, slots, eos_ids=(eos,))
    )
    got = output_ids(state)
    for p, g in zip(prompts, got):
        assert g == reference_greedy(p, 12, eos=(eos,))
    assert len(got[0]) <= 4 and got[0][-1] == eos
    assert np.all(np.asarray(state.tokens)[0, len(got[0]) :] == -1)


def test_stream_equals_generate():
    """The one streaming driver (`AotRunner.stream`, the library's and the CLI's), sampled, with a row
    stopped by EOS: after prefill every yield adds one token to each live row, and the last equals the
    jitted `generate` for the same key."""
    prompts, n = [[5, 6, 7], [9, 1, 4, 4, 2]], 8
    arr, lens, slots = pad_prompts(prompts, CFG, n)
    sampling = SamplingConfig(temperature=0.9, top_k=20)
    key = jax.random.key(7)
    gen = lambda eos: output_ids(  # noqa: E731
        generate(
            PARAMS,
            jnp.asarray(arr),
            jnp.asarray(lens),
            key,  # noqa: E731
            spec=DecodeSpec(CFG, n, slots, sampling=sampling, eos_ids=eos),
        )
    )
    eos = (gen(())[0][2],)  # row 0 stops at its third token (or before)
    whole = gen(eos)
    assert len(whole[0]) <= 3 < len(whole[1])  # the rows stop at different steps
    runner = VanillaRunner(PARAMS, CFG, max_new_tokens=n, max_len=slots, sampling=sampling, eos_ids=eos)
    outs = [out for out, _ in runner.stream(prompts, key)]
    assert outs[-1] == whole
    assert len(outs) == max(map(len, whole))  # prefill's yield, then one per step until every row is done
    for k, out in enumerate(outs):
        assert out == [row[: k + 1] for row in whole]


def test_sampling_is_reproducible_and_key_dependent():
    arr, lens, slots = pad_prompts([[5, 6, 7]] * 4, CFG, 16)
    spec = DecodeSpec(CFG, 16, slots, sampling=SamplingConfig(temperature=1.5))
    a = output_ids(generate(PARAMS, jnp.asarray(arr), jnp.asarray(lens), jax.random.key(1), spec=spec))
    b = output_ids(generate(PARAMS, jnp.asarray(arr), jnp.asarray(lens), jax.random.key(1), spec=spec))
    c = output_ids(generate(PARAMS, jnp.asarray(arr), jnp.asarray(lens), jax.random.key(2), spec=spec))
    assert a == b and a != c
    assert len({tuple(r) for r in a}) > 1  # rows draw independently


@pytest.mark.parametrize("bad,msg", [([[]], "empty"), ([[1, 500]], "outside the vocab")])
def test_pad_prompts_rejects_bad_prompts(bad, msg):
    with pytest.raises(ValueError, match=msg):
        pad_prompts(bad, CFG, 4)


def test_pad_prompts_rejects_cache_overflow_and_positions():
    with pytest.raises(ValueError, match="cache overflow"):
        pad_prompts([[1] * 30], CFG, 10, max_len=32)
    with pytest.raises(ValueError, match="positions"):
        pad_prompts([[1] * 500], CFG, 100)


def test_bucket():
    assert [bucket(n) for n in (1, 16, 17, 100)] == [16, 16, 32, 128]
    assert [prompt_width(n) for n in (1, 17, 32, 33, 130, 160)] == [16, 32, 32, 64, 160, 160]


@settings(max_examples=examples(12))
@given(st.lists(st.lists(st.integers(0, CFG.vocab_size - 1), min_size=1, max_size=24), min_size=1, max_size=3))
def test_generate_equals_stepwise_greedy_property(prompts):
    """Any ragged batch: the jitted prefill + while_loop == token-by-token full forwards."""
    arr, lens, slots = pad_prompts(prompts, CFG, 6, max_len=64)
    state = generate(PARAMS, jnp.asarray(arr), jnp.asarray(lens), jax.random.key(0), spec=DecodeSpec(CFG, 6, slots))
    assert output_ids(state) == [reference_greedy(p, 6) for p in prompts]


def test_runner_matches_generate_and_compiles_once():
    prompts = random_prompts(np.random.default_rng(5), [4, 9])
    runner = VanillaRunner(PARAMS, CFG, max_new_tokens=7, max_len=64)
    t0 = time.perf_counter()
    first = runner.run(prompts)
    t1 = time.perf_counter()
    again = runner.run(prompts)
    t2 = time.perf_counter()
    assert first.compile_s > 0 and again.compile_s == 0.0  # ahead-of-time, once per shape
    assert first.output_ids == again.output_ids == [reference_greedy(p, 7) for p in prompts]
    assert first.new_tokens == 14
    # the prefill shape these prompts compile for (experiments warm per shape): batch, padded width
    assert runner.prompt_shape(prompts) == (2, 16) and runner.prompt_shape([[1] * 17]) == (1, 32)
    # the phases are timed inside the run, apart from the compile (which dwarfs a tiny model's prefill)
    assert first.compile_s + first.prefill_s + first.decode_s <= t1 - t0 and first.prefill_s < first.compile_s
    assert 0 < again.prefill_s and 0 < again.decode_s and again.wall_s <= t2 - t1


def test_runner_stream_yields_tokens_and_timings_so_far():
    """The streaming driver on the runner's own compiled step: the run's tokens, one more per yield; the
    result so far at every yield (timings accumulate, the step compiles once per batch size)."""
    prompts = random_prompts(np.random.default_rng(5), [4, 9])
    runner = VanillaRunner(PARAMS, CFG, max_new_tokens=7, max_len=64)
    ran = runner.run(prompts)
    streamed = list(runner.stream(prompts))
    assert len(streamed) == 7  # prefill + 6 steps (no EOS: every row runs to the budget)
    for k, (out, res) in enumerate(streamed):
        assert out == res.output_ids == [row[: k + 1] for row in ran.output_ids]
        assert res.draft_s is None and res.verify_s is None and res.wall_s == res.prefill_s + res.decode_s
    results = [res for _, res in streamed]
    assert results[0].decode_s == 0.0 and all(b.decode_s > a.decode_s for a, b in zip(results, results[1:]))
    assert len({res.prefill_s for res in results}) == 1  # prefill ran once
    assert results[0].compile_s > 0  # the step's compile (prefill was compiled by `run`) ...
    *_, (_, again) = runner.stream(prompts)
    assert again.compile_s == 0.0 and again.output_ids == ran.output_ids  # ... once


def test_run_layers_hiddens_are_each_layers_output():
    """`return_hiddens`: entry l is the residual stream after layer l + 1 — what running layers [0, l + 1)
    alone gives (and [l + 1, L) continues from it to the final output); the last entry through `head` is
    forward's logits."""
    from jaxspec.model import embed, head, run_layers

    toks = jnp.asarray(random_prompts(np.random.default_rng(3), [7]), jnp.int32)
    cache = init_cache(CFG, 1, 16)
    pos, mask = jnp.arange(7, dtype=jnp.int32)[None], causal_mask(cache.lengths, 7, 16)
    logits, _, hid = forward(PARAMS, toks, cache, CFG, return_hiddens=True)
    assert len(hid) == CFG.num_layers and forward(PARAMS, toks, cache, CFG)[2] == []
    chex.assert_shape(hid, (1, 7, CFG.hidden_size))  # every layer's output: [B, T, D], the params' dtype
    chex.assert_type(hid, PARAMS["embed"].dtype)
    x0 = embed(PARAMS, toks, CFG)
    for l in range(CFG.num_layers):
        upto = run_layers(PARAMS, x0, cache, pos, mask, CFG, stop=l + 1)[0]
        np.testing.assert_allclose(np.asarray(hid[l]), np.asarray(upto), atol=1e-5)
        rest = run_layers(PARAMS, upto, cache, pos, mask, CFG, start=l + 1)[0]
        np.testing.assert_allclose(np.asarray(rest), np.asarray(hid[-1]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(head(PARAMS, hid[-1], CFG)), np.asarray(logits), atol=1e-5)
    assert not np.allclose(np.asarray(hid[0]), np.asarray(hid[-1]))  # the layers do something
