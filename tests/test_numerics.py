"""Numerics (ModelConfig.dtype / cache_dtype / precision), proven on the traced programs: a bf16 model runs
every product in bf16 with a bf16 cache, every dot carries the configured precision, and bf16 speculation
equals bf16 vanilla decoding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.extend.core import ClosedJaxpr, Jaxpr

from jaxspec import DecodeSpec, forward, generate, init_cache, init_params, output_ids
from jaxspec.easyspec import EasySpec
from jaxspec.layers import attention_mix, fused_attention_mix, use_fused_attention
from jaxspec.selfspec import DEL
from jaxspec.speculative import DraftModel, chain, make_spec, run_speculation, tree
from tests.helpers import tiny_cfg
from tests.spec_helpers import make_pair

BF16 = dict(dtype="bfloat16")
TARGET, DRAFT = tiny_cfg(num_layers=3, **BF16), tiny_cfg(num_layers=2, **BF16)
N_NEW, WIDTH, SLOTS = 12, 16, 64


def dot_eqns(jaxpr: Jaxpr):
    """Every dot_general in `jaxpr`, inside loops, conds, pjits and shard_maps too."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            yield eqn
        for v in eqn.params.values():
            for sub in v if isinstance(v, (tuple, list)) else (v,):
                if isinstance(sub, ClosedJaxpr):
                    yield from dot_eqns(sub.jaxpr)
                elif isinstance(sub, Jaxpr):
                    yield from dot_eqns(sub)


def weight_shapes(params) -> set[tuple[int, ...]]:
    return {tuple(x.shape) for x in jax.tree.leaves(params) if x.ndim == 2}


def padded(prompts):
    toks = np.zeros((len(prompts), WIDTH), np.int32)
    for i, p in enumerate(prompts):
        toks[i, : len(p)] = p
    return jnp.asarray(toks), jnp.asarray([len(p) for p in prompts], jnp.int32)


PROMPTS = [[5, 9, 11, 3], [2, 8, 8, 8, 8, 1, 40]]


def traced_programs(target, draft):
    """The jaxprs of a whole vanilla generation, a chain and a tree speculation with a draft model, DEL and
    EasySpec (vmapped groups): what a run executes, loops included."""
    tp, dp = make_pair(0, 0.5, target, draft)
    toks, lens = padded(PROMPTS)
    key = jax.random.key(0)
    out = [jax.make_jaxpr(lambda p: generate(p, toks, lens, key, spec=DecodeSpec(target, N_NEW, SLOTS)))(tp)]
    for method, drafter, d_params in (
        (chain(3), DraftModel(draft), dp),
        (tree(3, 2), DraftModel(draft), dp),
        (chain(4), DEL(cost="layers", exits=(1, 2)).bind(target), None),
    ):
        spec = make_spec(target, drafter, method, prompt_len=WIDTH, max_new_tokens=N_NEW, max_len=SLOTS)
        out.append(jax.make_jaxpr(lambda a, b: run_speculation(a, b, toks, lens, key, spec=spec))(tp, d_params))
    es = EasySpec(parallel=2, head=0, tail=0).bind(target)
    spec = make_spec(target, es, tree(2, 2), prompt_len=WIDTH, max_new_tokens=N_NEW, max_len=SLOTS)
    out.append(jax.make_jaxpr(lambda a, b: run_speculation(a, b, toks, lens, key, spec=spec))(tp, es.prepare(tp)))
    return tp, out


def test_bf16_model_runs_every_product_in_bf16():
    """No f32 operand left in any product of a bf16 model (the review found 13 of 16 weight products of a
    2-layer bf16 trace bf16 x f32: an f32 cache, f32 attention outputs, an f32 residual after layer 0)."""
    _, programs = traced_programs(TARGET, DRAFT)
    for prog in programs:
        eqns = list(dot_eqns(prog.jaxpr))
        assert len(eqns) > 20
        bad = [
            (tuple(v.aval.dtype.name for v in e.invars), tuple(v.aval.shape for v in e.invars))
            for e in eqns
            if any(v.aval.dtype != jnp.bfloat16 for v in e.invars)
        ]
        assert not bad, bad
        # the LM head and the attention scores accumulate into f32: bf16 logits would tie where f32 do not
        assert any(
            e.outvars[0].aval.dtype == jnp.float32 and TARGET.vocab_size in e.outvars[0].aval.shape for e in eqns
        )


def test_a_wider_cache_keeps_the_weight_products_in_the_model_dtype():
    """cache_dtype=float32 under bf16 params: the cache is f32, attention over it f32, every product with a
    weight still bf16 x bf16, the residual stream bf16."""
    target, draft = TARGET.replace(cache_dtype="float32"), DRAFT.replace(cache_dtype="float32")
    tp, programs = traced_programs(target, draft)
    shapes = weight_shapes(tp)
    assert (32, 16) not in shapes  # w · xᵀ's [In, rows] activations never look like a weight here
    for prog in programs:
        weighted = [e for e in dot_eqns(prog.jaxpr) if any(tuple(v.aval.shape) in shapes for v in e.invars)]
        assert len(weighted) > 10
        assert all(v.aval.dtype == jnp.bfloat16 for e in weighted for v in e.invars)
    cache = init_cache(target, 1, 8)
    logits, cache, hid = jax.eval_shape(
        lambda p, c: forward(p, jnp.zeros((1, 3), jnp.int32), c, target, return_hiddens=True), tp, cache
    )
    assert cache.k[0].dtype == jnp.float32 and logits.dtype == jnp.float32
    assert all(h.dtype == jnp.bfloat16 for h in hid)


@pytest.mark.parametrize("precision", ["highest", "default"])
def test_every_dot_carries_the_configured_precision(precision):
    """The setting reaches each product explicitly (tests set jax_default_matmul_precision=highest
    globally, so a dot without its own precision would not show up as 'default' here)."""
    target, draft = tiny_cfg(num_layers=3, precision=precision), tiny_cfg(num_layers=2, precision=precision)
    want = {"highest": lax.Precision.HIGHEST, "default": lax.Precision.DEFAULT}[precision]
    _, programs = traced_programs(target, draft)
    for prog in programs:
        got = {e.params["precision"] for e in dot_eqns(prog.jaxpr)}
        assert got == {(want, want)}, got


def test_bf16_outputs_and_cache_dtypes():
    cache = init_cache(TARGET, 2, 8)
    assert cache.k[0].dtype == jnp.bfloat16 and cache.v[-1].dtype == jnp.bfloat16
    tp = init_params(jax.random.key(0), TARGET)
    assert {x.dtype for x in jax.tree.leaves(tp)} == {jnp.dtype(jnp.bfloat16)}
    logits, cache, hid = forward(tp, jnp.asarray([[1, 2, 3]]), init_cache(TARGET, 1, 8), TARGET, return_hiddens=True)
    assert logits.dtype == jnp.float32 and cache.k[0].dtype == jnp.bfloat16 and hid[0].dtype == jnp.bfloat16


_generate = jax.jit(generate, static_argnames=("spec",))


@pytest.mark.parametrize("method", [chain(1), chain(4), tree(3, 2), tree(4, 3)], ids=str)
def test_bf16_speculation_equals_bf16_vanilla(method):
    """Greedy output of bf16 speculation == bf16 vanilla decoding, row by row, over agreements from total
    to poor. Verification reads a block where vanilla reads one token (another kernel on XLA:CPU), so a
    near-tie could flip a token in principle; these random models show none (the real models' count is
    measured in experiments/bf16_parity.py and the README)."""
    rng = np.random.default_rng(1)
    prompts = [list(rng.integers(0, TARGET.vocab_size, int(n))) for n in rng.integers(3, WIDTH, 6)]
    vspec = DecodeSpec(TARGET, N_NEW, SLOTS)
    for seed, lam in ((0, 0.0), (1, 0.5), (2, 2.0)):
        tp, dp = make_pair(seed, lam, TARGET, DRAFT)
        want = [output_ids(_generate(tp, *padded([p]), jax.random.key(0), spec=vspec))[0] for p in prompts]
        spec = make_spec(TARGET, DraftModel(DRAFT), method, prompt_len=WIDTH, max_new_tokens=N_NEW, max_len=SLOTS)
        res = run_speculation(tp, dp, *padded(prompts), jax.random.key(0), spec=spec)
        assert output_ids(res) == want, (seed, lam)


def test_numerics_errors():
    with pytest.raises(ValueError, match="ModelConfig.dtype='int8'"):
        tiny_cfg(dtype="int8")
    with pytest.raises(ValueError, match="ModelConfig.precision='fast'"):
        tiny_cfg(precision="fast")
    tp32 = init_params(jax.random.key(0), tiny_cfg())
    with pytest.raises(ValueError, match="params are float32 but the model config says dtype=bfloat16"):
        forward(tp32, jnp.asarray([[1, 2]]), init_cache(TARGET, 1, 8), TARGET)


@pytest.mark.parametrize(
    "T, W, dtype, atol",
    [(1, 11, "float32", 1e-5), (5, 16, "float32", 1e-5), (1, 11, "bfloat16", 2e-2), (5, 16, "bfloat16", 2e-2)],
)
def test_fused_attention_equals_ours(T, W, dtype, atol):
    """jax.nn.dot_product_attention with XLA's implementation (what a CPU runs) == our attention_mix: GQA (8
    query heads on 2 kv heads), a window shorter than the cache or all of it, a causal mask over ragged
    lengths; in bf16 (queries, cache and output bf16, as a bf16 model runs it) to bf16's resolution."""
    cfg = tiny_cfg(dtype=dtype)
    B, S, K = 2, 16, cfg.head_dim
    kq, kk, kv = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(kq, (B, T, cfg.num_heads, K)).astype(dtype)
    k_cache = jax.random.normal(kk, (B, cfg.num_kv_heads, S, K)).astype(dtype)
    v_cache = jax.random.normal(kv, (B, cfg.num_kv_heads, S, K)).astype(dtype)
    ends = jnp.asarray([W - 3, W])[:, None, None] - T + 1 + jnp.arange(T)[None, :, None]  # [B, T, 1]
    mask = jnp.arange(W)[None, None] < ends  # [B, T, W]: query t of row b sees its row's first ends[b, t]
    ours = attention_mix(q, k_cache, v_cache, mask, cfg.replace(attention="einsum"))
    fused = fused_attention_mix(q, k_cache, v_cache, mask, cfg, implementation="xla")
    assert fused.shape == ours.shape == (B, T, cfg.num_heads * K) and fused.dtype == ours.dtype == jnp.dtype(dtype)
    np.testing.assert_allclose(np.asarray(fused, np.float32), np.asarray(ours, np.float32), atol=atol)


def test_attention_choice():
    """auto: fused off CPU in the fast precision mode only (its products take the backend's default
    precision); fused or einsum when asked."""
    c = tiny_cfg()
    fast = c.replace(precision="default")
    assert use_fused_attention(fast, "gpu") and use_fused_attention(fast, "tpu")
    assert not use_fused_attention(fast, "cpu") and not use_fused_attention(c, "gpu")  # parity mode keeps ours
    assert use_fused_attention(c.replace(attention="fused"), "cpu")
    assert not use_fused_attention(fast.replace(attention="einsum"), "gpu")
    with pytest.raises(ValueError, match="ModelConfig.attention='flash'"):
        tiny_cfg(attention="flash")


def test_generation_with_fused_attention_equals_ours():
    """A whole greedy generation (prefill over padded prompts, then one-token steps) with attention
    "fused" gives our attention's tokens, and its logits to 1e-5."""
    cfg = tiny_cfg(num_layers=2)
    params = init_params(jax.random.key(3), cfg, scale=0.15)
    rng = np.random.default_rng(4)
    prompts = [list(rng.integers(0, cfg.vocab_size, int(n))) for n in (3, 9, 14)]
    out = {}
    for attention in ("einsum", "fused"):
        c = cfg.replace(attention=attention)
        toks, lens = padded(prompts)
        logits, _, _ = jax.jit(lambda p, t: forward(p, t, init_cache(c, 3, 32), c))(params, toks)
        out[attention] = (
            np.asarray(logits),
            output_ids(_generate(params, toks, lens, jax.random.key(0), spec=DecodeSpec(c, N_NEW, SLOTS))),
        )
    np.testing.assert_allclose(out["fused"][0], out["einsum"][0], atol=1e-5)
    assert out["fused"][1] == out["einsum"][1]
