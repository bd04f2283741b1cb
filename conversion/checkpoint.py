"""orbax checkpoints of converted params, restored straight into a given sharding.

Converting a GGUF dequantizes every tensor on the host (tens of seconds for the 1.5B model); the
converted tree is saved once under `$JAXSPEC_CACHE/converted/<key>/` and later loads read it back
directly onto the devices of the requested sharding."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxspec.config import ModelConfig, RopeScaling
from jaxspec.params import abstract_params


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


def config_to_json(cfg: ModelConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg))


def config_from_json(s: str) -> ModelConfig:
    d = json.loads(s)
    if d.get("rope_scaling"):
        d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
    d["eos_token_ids"] = tuple(d["eos_token_ids"])
    return ModelConfig(**d)


def save(path, params, cfg: ModelConfig) -> None:
    """Write `params` (numpy or jax arrays) and the config; a failed save leaves nothing behind.

    Multi-process (jax.distributed): every process calls it with the same global arrays; orbax writes each
    process's own shards into one shared directory (its multi-process save, a collective), then the
    primary process writes the config and renames the directory into place while the others wait."""
    from jax.experimental import multihost_utils

    path = Path(path).absolute()
    multi, primary = jax.process_count() > 1, jax.process_index() == 0
    # a single process writes a directory private to it: concurrent converters of one model must not share
    tmp = path.with_name(
        f"{path.name}.tmp-multihost" if multi else f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    )
    if primary or not multi:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    if multi:
        multihost_utils.sync_global_devices(f"jaxspec checkpoint {tmp}: created")
    try:
        ocp = _ocp()
        # uncompressed: restoring the 1.5B took 20 s with orbax's default zstd, 7 s without
        ckpt = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_compression=False))
        ckpt.save(tmp / "params", args=ocp.args.PyTreeSave(jax.tree.map(jnp.asarray, params)))
        if primary:
            (tmp / "config.json").write_text(config_to_json(cfg))
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
    except OSError:
        if not exists(path):  # another process finished the same checkpoint first: keep theirs
            raise
    finally:
        if multi:
            multihost_utils.sync_global_devices(f"jaxspec checkpoint {tmp}: saved")
        if primary or not multi:
            shutil.rmtree(tmp, ignore_errors=True)


def exists(path) -> bool:
    path = Path(path)
    return (path / "config.json").exists() and (path / "params").exists()


def restore(path, shardings=None, dtype="float32"):
    """Returns (cfg, params) in `dtype` (the config says so); params land on `shardings` (a tree like the
    params) when given."""
    path = Path(path).absolute()
    cfg = config_from_json((path / "config.json").read_text()).replace(dtype=jnp.dtype(dtype).name)
    target = abstract_params(cfg, shardings)
    if shardings is None:
        dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])  # this process's own
        target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=dev), target)
    params = _ocp().StandardCheckpointer().restore(path / "params", target)
    return cfg, params
