"""`load_model`: a registry name, a `.gguf` file or a HF directory → config, params (optionally
sharded over a mesh) and tokenizer. Converted params are cached as an orbax checkpoint."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from conversion import assets, checkpoint
from conversion.streaming import open_source, stream_params
from conversion.tokenizer import load_tokenizer
from jaxspec.config import ModelConfig
from jaxspec.params import LAYOUT_VERSION
from jaxspec.sharding import ShardingPlan, expand_for_mesh, plan_for, replicated_plan


@dataclasses.dataclass
class LoadedModel:
    cfg: ModelConfig
    params: Any
    tokenizer: Any
    source: Path
    plan: ShardingPlan | None
    load_s: float
    from_checkpoint: bool
    bytes_read: int | None = None  # weight bytes this process read from the source files (None: restored)


def _checkpoint_dir(path: Path, dtype: str, root=None) -> Path:
    marker = path.with_suffix(".sha256")
    if marker.exists():
        ident = marker.read_text().strip()
    else:  # not a registry file: key by location, sizes and mtimes of every file
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        stamp = ";".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.is_file())
        ident = hashlib.sha256(stamp.encode()).hexdigest()
    root = Path(root) if root is not None else assets.cache_dir() / "converted"
    return root / f"{ident[:24]}-{dtype}-v{LAYOUT_VERSION}"


def _tokenizer(path: Path, ckpt: Path | None):
    """From the checkpoint's saved copy when there is one (transformers' GGUF vocab conversion took
    10 s for the Qwen tokenizer; the saved `tokenizer.json` loads in well under a second)."""
    saved = ckpt / "tokenizer" if ckpt is not None else None
    if saved is not None and saved.exists():
        return load_tokenizer(saved)
    tok = load_tokenizer(path)
    if saved is not None and checkpoint.exists(ckpt):
        tmp = saved.with_name(f"tokenizer.tmp-{os.getpid()}")
        tok.save_pretrained(str(tmp))
        try:
            tmp.rename(saved)
        except OSError:  # another process saved it first
            shutil.rmtree(tmp, ignore_errors=True)
    return tok


def _plan(cfg: ModelConfig, mesh, replicated: bool) -> ShardingPlan | None:
    if mesh is None:
        return None
    return replicated_plan(mesh) if replicated else plan_for(cfg, mesh)


def model_config(model) -> ModelConfig:
    """`model`'s config alone (registry name, `.gguf` or HF directory): `config.json`, or the GGUF's metadata;
    no weight is read."""
    path = assets.resolve(model)
    if path.is_dir():
        from conversion.hf_loader import read_config

        return read_config(path)
    from conversion.gguf_loader import config_from_gguf, open_reader

    return config_from_gguf(open_reader(path))


def load_model_tokenizer(model, dtype: str = "float32"):
    """`model`'s tokenizer alone, no weights (from its converted checkpoint's saved copy when there is one)."""
    path = assets.resolve(model)
    return _tokenizer(path, _checkpoint_dir(path, dtype))


def load_model(
    model,
    *,
    mesh=None,
    dtype: str = "float32",
    precision: str = "highest",
    cache_dtype=None,
    attention: str = "auto",
    use_checkpoint: bool = True,
    tokenizer: bool = True,
    checkpoint_root=None,
    replicated: bool = False,
) -> LoadedModel:
    """`model`: registry name, `.gguf` path or HF directory. The first load converts on the host and
    saves an orbax checkpoint (under `checkpoint_root`, default `$JAXSPEC_CACHE/converted`); later
    loads restore it straight onto `mesh` (tensor-parallel plan, see jaxspec.sharding — a GQA model with
    fewer kv heads than tp devices comes back with its kv heads repeated, `cfg.num_kv_heads` = tp;
    `replicated`: whole on every device, as EasySpec's draft). `dtype`, `precision`, `cache_dtype` and
    `attention` go into the returned config (ModelConfig's numerics: parity "highest", or the backend's
    fast "default"; attention "auto", "einsum" or "fused")."""
    t0 = time.perf_counter()
    path = assets.resolve(model)
    jdtype = jnp.dtype(dtype)
    numerics = dict(dtype=jdtype.name, precision=precision, cache_dtype=cache_dtype, attention=attention)
    ckpt = _checkpoint_dir(path, dtype, checkpoint_root) if use_checkpoint else None
    from_ckpt, read = bool(ckpt and checkpoint.exists(ckpt)), None
    if from_ckpt:
        cfg = checkpoint.config_from_json((ckpt / "config.json").read_text()).replace(**numerics)
        plan = _plan(cfg, mesh, replicated)
        _, params = checkpoint.restore(ckpt, plan.param_shardings(cfg) if plan else None, jdtype)
    else:  # each device's slice of each tensor, read and cast as it is placed (conversion/streaming.py)
        cfg, source = open_source(path)
        cfg = cfg.replace(**numerics)
        plan = _plan(cfg, mesh, replicated)
        params = stream_params(cfg, source, plan.param_shardings(cfg) if plan else None, jdtype)
        jax.block_until_ready(params)
        read = source.bytes_read
        if ckpt is not None:
            checkpoint.save(ckpt, params, cfg)
    if plan is not None and not replicated:  # GQA with fewer kv heads than tp: one kv head per device
        params, cfg, plan = expand_for_mesh(params, cfg, plan)
    tok = _tokenizer(path, ckpt) if tokenizer else None
    if tok is not None and len(tok) > cfg.vocab_size:
        raise ValueError(f"tokenizer has {len(tok)} tokens but the model's vocab is {cfg.vocab_size}")
    return LoadedModel(cfg, params, tok, path, plan, time.perf_counter() - t0, from_ckpt, read)
