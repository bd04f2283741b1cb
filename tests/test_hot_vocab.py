"""Hot-vocabulary draft heads: the ranking (count, then raw prior, then soft counts, then id), the soft counts (a
model's expected counts, batched, equal to one sequence at a time), the shipped file, the frequency file (written
atomically, checked against the tokenizer's vocabulary hash and size), the trimmed head (the kept tokens' logits
exactly, −inf elsewhere), drafts only from the kept tokens, greedy output equal to vanilla (property-based: random
subsets, chains, adaptive chains, trees, batches; EasySpec too), sampling with q renormalised over the subset
following the target's exact joint, and the errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxspec import output_ids
from jaxspec.easyspec import EasySpec
from jaxspec.model import head
from jaxspec.params import init_params
from jaxspec.sampling import SamplingConfig
from jaxspec.speculative import (
    DraftModel,
    HotVocab,
    Model,
    chain,
    draft_phase,
    load_hot_vocab,
    make_spec,
    run_speculation,
    spec_prefill,
    speculate,
    tree,
)
from jaxspec.speculative.hot_vocab import (
    count_tokens,
    coverage,
    find_file,
    hot_vocab,
    rank,
    trim_head,
    write_frequencies,
)
from tests.helpers import exact_forward, examples, random_prompts, tiny_cfg
from tests.spec_helpers import DRAFT, TARGET, make_pair, pool_outcomes
from tests.test_speculative import MAX_BATCH, N_NEW, SLOTS, WIDTH, vanilla_rows


class Tok:
    """A tokenizer as far as the frequency file cares: its (token, id) table."""

    def __init__(self, n: int, salt: str = ""):
        self.table = {f"t{i}{salt}": i for i in range(n)}

    def get_vocab(self):
        return dict(self.table)


def subset(ids, vocab=TARGET.vocab_size) -> HotVocab:
    return HotVocab(np.sort(np.asarray(ids, np.int32)), vocab)


def test_rank_by_count_then_id():
    counts = count_tokens([[5, 9, 2], [9, 5, 2, 9], [9]])  # 9: 4, 2: 2, 5: 2
    assert counts == {9: 4, 5: 2, 2: 2}
    assert rank(counts, 12).tolist() == [9, 2, 5, 0, 1, 3, 4, 6, 7, 8, 10, 11]
    assert hot_vocab(counts, 4, 12).ids.tolist() == [0, 2, 5, 9]  # kept ascending: the head's row order
    assert coverage(rank(counts, 12), [9, 9, 2, 11], [1, 3, 12]) == {1: 0.5, 3: 0.75, 12: 1.0}


def test_rank_ties_by_prior_then_soft_then_id():
    counts, prior = {9: 4, 5: 2, 2: 2}, {5: 3, 7: 1, 11: 1, 9: 1}
    soft = {2: 0.5, 11: 0.9, 3: 0.2, 0: 0.1, 9: 0.01}
    # 9 (count 4); 5, 2 (count 2: prior 3 beats 0); 11, 7 (prior 1: soft 0.9 beats 0); 3, 0 (soft); the rest by id
    assert rank(counts, 12, prior, soft).tolist() == [9, 5, 2, 11, 7, 3, 0, 1, 4, 6, 8, 10]
    assert rank(counts, 12, prior).tolist() == [9, 5, 2, 7, 11, 0, 1, 3, 4, 6, 8, 10]
    assert hot_vocab(counts, 5, 12, prior=prior, soft=soft).ids.tolist() == [2, 5, 7, 9, 11]


def test_soft_counts_written_loaded_and_checked(tmp_path):
    tok, path = Tok(12), tmp_path / "soft.json"
    doc = write_frequencies(path, {9: 4}, tok, 12, {"target": "tiny"}, prior={7: 2}, soft={3: 0.25, 1: 1 / 3, 7: 2.0})
    assert doc["soft_counts"] == [[7, 2.0], [1, 0.333333], [3, 0.25]]  # 6 significant digits, largest first
    assert load_hot_vocab(path, 4).ids.tolist() == [1, 3, 7, 9]  # 9, 7, then the soft order: 1, 3
    assert load_hot_vocab(path, 3).ids.tolist() == [1, 7, 9]
    for bad in ({3: 0.0}, {3: -1.0}, {3: float("nan")}, {3: float("inf")}):
        with pytest.raises(ValueError, match="soft counts must be finite and positive"):
            write_frequencies(tmp_path / "bad.json", {9: 4}, tok, 12, {}, soft=bad)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        write_frequencies(tmp_path / "bad.json", {9: 4}, tok, 12, {}, soft={12: 1.0})
    assert not (tmp_path / "bad.json").exists()


def test_expected_counts_batched_equal_one_sequence_at_a_time():
    """Rows of several padded lengths in calls of at most 128 positions: the sum of the softmax over every
    real position, as the tests' exact forward gives it sequence by sequence (padding neither seen nor
    counted); empty sequences add nothing."""
    from types import SimpleNamespace

    from jaxspec.hot_vocab_file import expected_counts

    cfg = tiny_cfg(num_layers=2)
    params = init_params(jax.random.key(3), cfg)
    seqs = random_prompts(np.random.default_rng(0), [5, 64, 65, 1, 30, 0, 64, 3, 100])
    got = expected_counts(SimpleNamespace(cfg=cfg, params=params), seqs, positions_per_call=128, log=lambda s: None)
    want = np.zeros(cfg.vocab_size)
    for seq in seqs:
        if seq:
            want += np.asarray(jax.nn.softmax(exact_forward(params, seq, cfg, 128)[0][0], -1), np.float64).sum(0)
    assert got.shape == (cfg.vocab_size,) and abs(got.sum() - sum(map(len, seqs))) < 1e-3
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


@pytest.mark.assets
def test_the_shipped_frequency_file_fits_the_qwen_pair():
    """The file `--draft-vocab N` finds for the Qwen2.5-Coder tokenizer: made for it, with generated counts,
    a raw prior and soft counts enough to rank a 64K head by evidence rather than by id."""
    from conversion.loader import load_model_tokenizer
    from jaxspec.speculative.hot_vocab import ASSET_DIR, file_ranking

    tok = load_model_tokenizer("qwen2.5-coder-0.5b-instruct")
    path = find_file(tok)
    assert path == ASSET_DIR / "qwen2.5-coder-1.5b-instruct.json"
    counts, prior, soft = file_ranking(json.loads(path.read_text()))
    assert len(counts) > 3000 and len(prior) > 10000 and len(set(counts) | set(prior) | set(soft)) >= 65536
    v = load_hot_vocab(path, 49152, tokenizer=tok, vocab_size=151936)
    assert v.size == 49152 and set(counts) <= set(v.ids.tolist())


@pytest.mark.assets
def test_making_a_file_refuses_a_soft_model_with_another_tokenizer(capsys):
    """Before any generation: the soft counts of a model with another tokenizer would rank other tokens."""
    from jaxspec.hot_vocab_file import main

    with pytest.raises(SystemExit) as e:
        main(["--model", "smollm2-135m-instruct", "--soft", "qwen2.5-coder-0.5b-instruct"])
    assert e.value.code == 2 and "its tokenizer is not smollm2-135m-instruct's" in capsys.readouterr().err


def test_frequency_file_round_trip_and_its_checks(tmp_path):
    tok = Tok(12)
    path = tmp_path / "model.json"
    doc = write_frequencies(path, {3: 5, 7: 5, 1: 9}, tok, 12, {"target": "tiny"})
    assert doc["tokens_counted"] == 19 and doc["counts"] == [[1, 9], [3, 5], [7, 5]]
    v = load_hot_vocab(path, 3, tokenizer=tok, vocab_size=12)
    assert v.ids.tolist() == [1, 3, 7] and v.file == "model.json" and v.describe()["size"] == 3
    assert v == load_hot_vocab(path, 3) and hash(v) == hash(load_hot_vocab(path, 3))  # static: by content
    assert v != load_hot_vocab(path, 4)
    assert load_hot_vocab(path, 12).ids.tolist() == list(range(12))
    assert find_file(tok, tmp_path) == path
    with pytest.raises(ValueError, match="made for another tokenizer"):
        load_hot_vocab(path, 3, tokenizer=Tok(12, salt="x"))
    with pytest.raises(ValueError, match="no hot-vocabulary frequency file for this tokenizer"):
        find_file(Tok(12, salt="x"), tmp_path)
    with pytest.raises(ValueError, match="made for a vocabulary of 12 tokens, the draft has 13"):
        load_hot_vocab(path, 3, vocab_size=13)
    for n in (0, 13):
        with pytest.raises(ValueError, match=r"draft vocabulary size .* must be in 1..12"):
            load_hot_vocab(path, n)
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a hot-vocabulary frequency file"):
        load_hot_vocab(tmp_path / "other.json", 3)
    with pytest.raises(ValueError, match="cannot read the hot-vocabulary file"):
        load_hot_vocab(tmp_path / "missing.json", 3)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        write_frequencies(tmp_path / "bad.json", {12: 1}, tok, 12, {})
    assert not (tmp_path / "bad.json").exists()


@pytest.mark.parametrize("tied", [False, True])
def test_trimmed_head_gives_the_kept_logits_and_minus_inf_elsewhere(tied):
    cfg = tiny_cfg(tie_embeddings=tied)
    params = init_params(jax.random.key(0), cfg, scale=0.5)
    x = jax.random.normal(jax.random.key(1), (2, 3, cfg.hidden_size))
    keep = np.array([0, 5, 6, 17, cfg.vocab_size - 1])
    full = head(params, x, cfg)
    hot = head(trim_head(params, cfg, subset(keep, cfg.vocab_size)), x, cfg)
    np.testing.assert_allclose(hot[..., keep], full[..., keep], rtol=1e-6, atol=1e-6)
    out = np.setdiff1d(np.arange(cfg.vocab_size), keep)
    assert np.all(np.isneginf(np.asarray(hot[..., out])))
    with pytest.raises(ValueError, match="made for 7 tokens, the draft model has"):
        trim_head(params, cfg, HotVocab(np.arange(3, dtype=np.int32), 7))


def _spec_run(tp, dp, drafter, method, prompts):
    spec = make_spec(TARGET, drafter, method, prompt_len=WIDTH, max_new_tokens=N_NEW, eos_ids=(7,), max_len=SLOTS)
    toks = np.zeros((len(prompts), WIDTH), np.int32)
    for i, p in enumerate(prompts):
        toks[i, : len(p)] = p
    lens = jnp.asarray([len(p) for p in prompts], jnp.int32)
    return spec, jnp.asarray(toks), lens


def test_drafts_come_from_the_kept_tokens_only():
    """A round's draft tree (chain and tree) holds only kept tokens, however the full head would rank —
    three kept tokens, so a 3-wide tree must use every one of them at every node."""
    tp, dp = make_pair(2, 0.05)  # a draft that agrees with the target: its favourites are mostly cut away
    keep = np.array([1, 5, 9])
    prompts = random_prompts(np.random.default_rng(0), [5, 17, 30])
    for method in (chain(4), tree(3, 3)):
        drafter = DraftModel(DRAFT, vocab=subset(keep))
        spec, toks, lens = _spec_run(tp, dp, drafter, method, prompts)
        state = spec_prefill(tp, drafter.prepare(dp), toks, lens, jax.random.key(0), spec=spec)
        _, t = draft_phase(tp, drafter.prepare(dp), state, spec=spec)
        drafted = np.asarray(t.tokens)[np.asarray(t.valid)]
        assert drafted.size > 0 and np.isin(drafted, keep).all(), drafted


METHODS = [chain(1), chain(4), chain(2, adaptive=True, k_max=5), tree(3, 2), tree(2, 4)]


@pytest.mark.slow
def test_greedy_with_a_hot_vocabulary_equals_vanilla():
    """Random kept subsets (a few tokens to all of them) on random pairs: output identical to vanilla.
    Pooled over the examples, rounds rejecting at once, accepting partly and wholly all occur."""
    hist = {"none": 0, "partial": 0, "full": 0}

    @settings(max_examples=examples(40))
    @given(
        method=st.sampled_from(range(len(METHODS))),
        batch=st.integers(1, MAX_BATCH),
        seed=st.integers(0, 3),
        lam=st.sampled_from([0.0, 0.3, 1.0]),
        keep=st.integers(2, TARGET.vocab_size),
        data=st.data(),
    )
    def check(method, batch, seed, lam, keep, data):
        tp, dp = make_pair(seed, lam)
        rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
        vocab = subset(rng.choice(TARGET.vocab_size, keep, replace=False))
        lengths = data.draw(st.lists(st.integers(1, WIDTH), min_size=batch, max_size=batch))
        prompts = random_prompts(rng, lengths)
        rows = prompts + [prompts[0]] * (MAX_BATCH - batch)
        drafter = DraftModel(DRAFT, vocab=vocab)
        spec, toks, lens = _spec_run(tp, dp, drafter, METHODS[method], rows)
        state = run_speculation(tp, drafter.prepare(dp), toks, lens, jax.random.key(0), spec=spec)
        assert output_ids(state)[:batch] == vanilla_rows(tp, prompts)
        pool_outcomes(hist, state.stats, batch)

    check()
    assert min(hist.values()) > 0, hist


def test_easyspec_and_speculate_with_a_hot_vocabulary():
    """Through `speculate` with unbound drafters (bound to the draft there): the separate draft model and
    EasySpec's layer-parallel draft, each with half the vocabulary — vanilla's output, some accepted."""
    tp, dp = make_pair(1, 0.05)
    prompts = random_prompts(np.random.default_rng(3), [12, 4])
    vocab = subset(np.arange(0, TARGET.vocab_size, 2))
    want = vanilla_rows(tp, prompts, eos=())
    for drafter in (DraftModel(vocab=vocab), EasySpec(groups=((0, 1),), vocab=vocab)):
        out = speculate(
            Model(tp, TARGET), Model(dp, DRAFT), prompts, method=chain(3), max_new_tokens=N_NEW, drafter=drafter
        )
        assert out.output_ids == want, type(drafter).__name__
        assert 0 < out.stats["accepted"] < out.stats["drafted"], out.stats


@pytest.mark.parametrize(
    "method,sampling",
    [(chain(3), SamplingConfig(1.0)), (tree(2, 3), SamplingConfig(0.8, top_k=4))],
    ids=["chain3-t1", "tree2x3-top4"],
)
def test_hot_vocabulary_sampling_matches_the_target_joint(method, sampling):
    """q renormalised over the kept tokens (0 outside) — the acceptance rule stays exact: the first three
    tokens follow the target's joint, tokens outside the subset included (the target emits them)."""
    from tests.test_spec_sampling import DRAFT as SMALL_DRAFT
    from tests.test_spec_sampling import V, check_sampling

    check_sampling(method, sampling, DraftModel(SMALL_DRAFT, vocab=HotVocab(np.array([0, 2, 3, 5, 6], np.int32), V)))


def test_unbound_draft_model_and_size_errors():
    tp, dp = make_pair(1, 0.3)
    with pytest.raises(ValueError, match="not bound to a draft model"):
        DraftModel().prepare(dp)
    with pytest.raises(ValueError, match="made for 7 tokens"):
        speculate(
            Model(tp, TARGET),
            Model(dp, DRAFT),
            [[1, 2]],
            method=chain(2),
            max_new_tokens=4,
            drafter=DraftModel(vocab=HotVocab(np.arange(3, dtype=np.int32), 7)),
        )
    with pytest.raises(ValueError, match="must be in 1.."):
        hot_vocab({}, 0, 10)
