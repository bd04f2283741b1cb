"""DEL's overheads and its exit dispatch on one model, one CPU device (issue 14): the verification block with
and without the shadow rows, the statistics update with the TPL choice, one draft forward at an exit under
each dispatch, and the LM head against one layer (the `head_cost` TPL option in layers).

    python -m experiments.selfspec.del_costs --model qwen2.5-coder-1.5b-instruct
    (the same as `python -m experiments.selfspec.del_selfspec costs --model ...`)

Writes experiments/results/selfspec/del_costs_<model>.json."""

from __future__ import annotations

import argparse
import json
import time

from experiments.common.paths import results_dir
from experiments.common.results import log, write_json

RESULTS = results_dir("selfspec")


def cmd_costs(args) -> None:
    """DEL's overheads and the exit dispatch, best of 5 after warm-up, cache holding 256 tokens:
    the verification block with and without the shadow rows (spread and all exits) at block widths 1, 3,
    8, 19; the statistics update + TPL choice; one draft forward at an exit — the static (compiled
    variant, LayerSkip), `segments` and `switch` dispatches — with their compile times; and the LM head
    against one layer (the `head_cost` TPL option in layers)."""
    import functools

    import jax
    import jax.numpy as jnp

    from conversion.loader import load_model
    from jaxspec.cache import init_cache
    from jaxspec.masks import causal_mask
    from jaxspec.model import decoder_layer, head
    from jaxspec.selfspec import DEL, exit_stats, spread_exits
    from jaxspec.selfspec.dynamic_exit import exit_logits
    from jaxspec.selfspec.exit_stats import ExitStats
    from jaxspec.selfspec.layerskip import shallow_logits
    from jaxspec.speculative.seam import HeadRows
    from jaxspec.speculative.verification import verification_pass
    from jaxspec.timing import best_time

    m = load_model(args.model)
    cfg, p = m.cfg, m.params
    L, ctx, S = cfg.num_layers, 256, 512
    cache = init_cache(cfg, 1, S).replace(lengths=jnp.asarray([ctx], jnp.int32))
    out = {"model": args.model, "layers": L, "context": ctx, "verify_ms": {}, "draft_ms": {}, "compile_s": {}}

    def timed(fn, *a):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*a))
        return 1e3 * best_time(fn, *a), time.perf_counter() - t0

    for T in (1, 3, 8, 19):
        toks, pos = jnp.ones((1, T), jnp.int32), ctx + jnp.arange(T)[None]
        mask = causal_mask(cache.lengths, T, S)
        for name, shadow in (("none", ()), ("spread", spread_exits(L)), ("all", tuple(range(1, L)))):
            f = jax.jit(functools.partial(verification_pass, cfg=cfg, rows=HeadRows(shadow) if shadow else None))
            out["verify_ms"][f"T{T}-{name}"], _ = timed(f, p, toks, cache, pos, mask)
        log(
            f"verify T={T}: "
            + ", ".join(f"{k} {v:.1f} ms" for k, v in out["verify_ms"].items() if k.startswith(f"T{T}-"))
        )
    step = out["verify_ms"]["T1-none"]

    exits = spread_exits(L)
    d = DEL().bind(cfg)
    stats = ExitStats(jnp.ones((len(exits), 2)), jnp.ones((len(exits), 2)) * 0.5)
    match = jnp.zeros((1, 19, len(exits)), bool)
    conf = jnp.full((1, 19, len(exits)), 0.5)
    valid = jnp.ones((1, 19), bool)
    upd = jax.jit(lambda s: d.decide(exit_stats.update(s, match, conf, valid, 0.95), 18))
    out["stats_update_ms"], _ = timed(upd, stats)

    toks, pos, mask = jnp.ones((1, 1), jnp.int32), jnp.asarray([[ctx]]), causal_mask(cache.lengths, 1, S)
    for e_idx in (len(exits) - 1, len(exits) // 2):
        E = exits[e_idx]
        static = jax.jit(lambda p, c, E=E: shallow_logits(p, toks, c, pos, mask, E, cfg)[0])
        out["draft_ms"][f"E{E}-static"], out["compile_s"][f"E{E}-static"] = timed(static, p, cache)
        for disp in ("segments", "switch"):
            f = jax.jit(lambda p, c, i, disp=disp: exit_logits(p, toks, c, pos, mask, cfg, exits, i, disp)[0])
            out["draft_ms"][f"E{E}-{disp}"], out["compile_s"][f"E{E}-{disp}"] = timed(f, p, cache, jnp.int32(e_idx))
        log(
            f"draft at E{E}: "
            + ", ".join(f"{k} {v:.1f} ms" for k, v in out["draft_ms"].items() if k.startswith(f"E{E}-"))
        )

    x = jnp.ones((1, 1, cfg.hidden_size), jnp.float32)
    layer = jax.jit(lambda p, c: decoder_layer(p["layers"][0], x, c.k[0], c.v[0], pos, c.lengths, mask, cfg)[0])
    out["layer_alone_ms"], _ = timed(layer, p, cache)
    out["head_ms"], _ = timed(jax.jit(lambda p: head(p, x, cfg)), p)
    out["layer_in_step_ms"] = (step - out["head_ms"]) / L  # a layer as it runs inside the 1-token step
    out["head_cost_in_layers"] = out["head_ms"] / out["layer_in_step_ms"]
    out["target_step_ms"] = step
    out["shadow_overhead_1tok"] = {k: out["verify_ms"][f"T1-{k}"] / step - 1 for k in ("spread", "all")}
    out["stats_overhead"] = out["stats_update_ms"] / step
    write_json(out, RESULTS / f"del_costs_{args.model}.json")
    log(json.dumps({k: v for k, v in out.items() if k not in ("verify_ms", "draft_ms", "compile_s")}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    cmd_costs(ap.parse_args())


if __name__ == "__main__":
    main()
