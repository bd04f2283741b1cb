"""HF model directory → (ModelConfig, params): `config.json` plus `model.safetensors`, sharded
`*.safetensors` with an index, or torch `pytorch_model*.bin` state dicts — read whole onto the host
(`load_hf_dir`: the reference path, and torch files). `load_model` streams safetensors per device slice
instead (`conversion.streaming`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conversion.mapping import ConversionError, params_from_hf_tensors
from jaxspec.config import ModelConfig, config_from_hf


def read_config(path: Path) -> ModelConfig:
    with open(path / "config.json") as f:
        return config_from_hf(json.load(f))


def weight_files(path: Path) -> list[Path]:
    """The weight files of a HF directory: an index's shards (all present), else the first pattern that matches."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.exists():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            missing = [f for f in files if not (path / f).exists()]
            if missing:
                raise ConversionError(f"{index} names shard files that do not exist: {missing}")
            return [path / f for f in files]
    for pattern in ("model.safetensors", "*.safetensors", "pytorch_model.bin", "*.bin"):
        found = sorted(path.glob(pattern))
        if found:
            return found
    raise ConversionError(
        f"no weights in {path}: expected model.safetensors, sharded *.safetensors with an index, or pytorch_model.bin"
    )


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    tensors: dict[str, np.ndarray] = {}
    for f in weight_files(path):
        if f.suffix == ".safetensors":
            from safetensors.numpy import load_file

            try:
                part = load_file(str(f))
            except Exception as e:  # safetensors raises its own error types for corrupt headers
                raise ConversionError(f"corrupt safetensors file {f}: {e}") from e
        else:
            try:
                import torch
            except ImportError as e:
                raise ConversionError(f"{f} is a torch state dict: install torch to read it") from e
            try:
                sd = torch.load(f, map_location="cpu", weights_only=True)
            except Exception as e:  # pickle / zip errors of a damaged file
                raise ConversionError(f"corrupt torch state dict {f}: {e}") from e
            part = {k: v.float().numpy() for k, v in sd.items()}
        dup = set(part) & set(tensors)
        if dup:
            raise ConversionError(f"tensors stored twice across shards: {sorted(dup)}")
        tensors.update(part)
    return tensors


def load_hf_dir(path, dtype=np.float32):
    """Returns (cfg, params as numpy arrays)."""
    path = Path(path)
    cfg = read_config(path)
    tensors = read_tensors(path)
    # buffers some checkpoints carry that are not weights
    tensors = {k: v for k, v in tensors.items() if not k.endswith("rotary_emb.inv_freq")}
    return cfg, params_from_hf_tensors(cfg, tensors, dtype)
