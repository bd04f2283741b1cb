"""Streaming, sharded, dtype-direct conversion: each device's slice of each tensor, read from the file when
jax asks for it (`jax.make_array_from_callback`), converted straight to the requested dtype.

A checkpoint is opened as a *tensor source* — names and shapes from the headers alone, so the strict name
map (`mapping.match_names`) fails before any weight is read — and each param leaf becomes a global array
whose per-device callback reads just that device's index of the tensor:
  * safetensors (one file, or shards with an index): `safe_open(...).get_slice(name)[index]` reads those
    bytes and nothing else; a bf16 file becomes bf16 params without an fp32 copy;
  * GGUF: quantized blocks are dequantized one whole tensor at a time (kept until the next tensor, so a
    tensor split over 8 devices is dequantized once), then sliced;
  * torch `.bin` state dicts are read whole (pickle has no slices): `conversion.hf_loader`.
Host memory therefore peaks near the params themselves (on CPU the "device" arrays are host memory) plus
about one tensor in flight, instead of the whole fp32 model on the host and then its device copy; in a
multi-process run `make_array_from_callback` asks each process only for its own devices' slices, so each
process reads only what its devices hold (`bytes_read` counts it)."""

from __future__ import annotations

import ctypes
import gc
import json
import math
from pathlib import Path

import jax
import numpy as np

from conversion.mapping import ConversionError, match_names
from jaxspec.config import ModelConfig
from jaxspec.params import Params


class SafetensorsSource:
    """The tensors of a HF directory's safetensors files: `shapes` (name → shape) from the headers,
    `read(name, index)` one slice. Inconsistent shards are errors here, before any weight is read."""

    def __init__(self, path: Path, files: list[Path]):
        import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy: safetensors' numpy reader needs it)
        from safetensors import safe_open

        self.where: dict[str, Path] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.bytes_read = 0
        for f in files:
            try:
                with safe_open(str(f), framework="numpy") as h:
                    for name in h.keys():
                        if name in self.where:
                            raise ConversionError(f"tensors stored twice across shards: {[name]}")
                        self.where[name] = f
                        self.shapes[name] = tuple(h.get_slice(name).get_shape())
            except ConversionError:
                raise
            except Exception as e:  # safetensors raises its own error types for corrupt headers
                raise ConversionError(f"corrupt safetensors file {f}: {e}") from e
        index = path / "model.safetensors.index.json"
        if index.exists():
            wanted = json.loads(index.read_text())["weight_map"]
            wrong = sorted(n for n, f in wanted.items() if n not in self.where or self.where[n].name != f)
            if wrong:
                raise ConversionError(f"{index} places tensors in shards that do not hold them: {wrong[:5]}")

    def read(self, name: str, index: tuple) -> np.ndarray:
        from safetensors import safe_open

        with safe_open(str(self.where[name]), framework="numpy") as h:  # mapped for this read only
            out = np.asarray(h.get_slice(name)[index] if index else h.get_tensor(name))
        self.bytes_read += out.nbytes
        return out


class GgufSource:
    """The tensors of a GGUF file under HF names: dequantized one tensor at a time (the last one kept),
    llama q/k un-permuted, non-finite values refused."""

    def __init__(self, reader, cfg: ModelConfig):
        from conversion.gguf_loader import named_tensors

        self.cfg, self.tensors, self.bytes_read = cfg, named_tensors(reader), 0
        # GGUF lists dims fastest-first
        self.shapes = {name: tuple(int(d) for d in reversed(t.shape)) for name, t in self.tensors.items()}
        self._last: tuple[str, np.ndarray] | None = None

    def _whole(self, name: str) -> np.ndarray:
        if self._last is None or self._last[0] != name:
            from conversion.gguf_loader import dequantized

            self._last = None  # drop the previous tensor before building the next
            self._last = (name, dequantized(self.tensors[name], self.cfg))
        return self._last[1]

    def read(self, name: str, index: tuple) -> np.ndarray:
        out = self._whole(name)[index]
        self.bytes_read += out.nbytes
        return out


class DictSource:
    """Tensors already in host memory (a torch state dict read whole)."""

    def __init__(self, tensors: dict[str, np.ndarray]):
        self.tensors, self.bytes_read = tensors, 0
        self.shapes = {k: tuple(np.shape(v)) for k, v in tensors.items()}

    def read(self, name: str, index: tuple) -> np.ndarray:
        out = np.asarray(self.tensors[name])[index]
        self.bytes_read += out.nbytes
        return out


def open_source(path: Path):
    """(cfg, tensor source) for a HF directory or a GGUF file."""
    if path.is_dir():
        from conversion.hf_loader import read_config, read_tensors, weight_files

        cfg, files = read_config(path), weight_files(path)
        if all(f.suffix == ".safetensors" for f in files):
            return cfg, SafetensorsSource(path, files)
        return cfg, DictSource(read_tensors(path))  # torch .bin: whole
    from conversion.gguf_loader import config_from_gguf, open_reader

    reader = open_reader(path)
    cfg = config_from_gguf(reader)
    return cfg, GgufSource(reader, cfg)


def _check_tied_head(source, name: str, rows: int = 4096) -> None:
    """A tied config's stored head must equal the embedding: compared a block of rows at a time."""
    n = source.shapes[name][0]
    for start in range(0, n, rows):
        block = (slice(start, min(n, start + rows)),)
        if not np.array_equal(source.read(name, block), source.read("model.embed_tokens.weight", block)):
            raise ConversionError(f"{name}: the config ties embeddings but the stored head differs from the embedding")


def stream_params(cfg: ModelConfig, source, shardings, dtype) -> Params:
    """The param tree of `cfg` as global arrays laid out by `shardings` (a tree like the params; None:
    this process's first device), each device's slice read from `source` and cast to `dtype` as it
    arrives. Names and shapes are checked first (`match_names`); nothing is read when they are wrong."""
    found, tied = match_names(cfg, source.shapes)
    for name in tied:
        _check_tied_head(source, name)
    dtype = np.dtype(dtype)
    dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def leaf(path: tuple, sharding):
        name = found[path]
        shape = source.shapes[name]

        def slice_of(index):
            return np.ascontiguousarray(source.read(name, index), dtype=dtype)

        return jax.make_array_from_callback(shape, sharding if sharding is not None else dev, slice_of)

    def sharding_at(path):
        if shardings is None:
            return None
        return shardings["layers"][path[1]][path[2]] if path[0] == "layers" else shardings[path[0]]

    params: Params = {"layers": [{} for _ in range(cfg.num_layers)]}
    for path in sorted(found, key=lambda p: (p[0] == "layers", p[1:] if p[0] == "layers" else p)):
        arr = leaf(path, sharding_at(path))
        if path[0] == "layers":
            params["layers"][path[1]][path[2]] = arr
        else:
            params[path[0]] = arr
        # make_array_from_callback leaves a tensor's per-device host slices in a reference cycle (a 1 GB
        # tensor stayed resident twice over until a collection), and freed slices of a few MB stay in
        # malloc's arenas: collect the young cycles and trim the heap after each tensor (a 2 GB load:
        # 2.59 → 2.49 GB peak; experiments/conversion/streaming_memory.py, docs/models.md)
        gc.collect(0)
        _trim()
    gc.collect()
    return params


def _trim() -> None:
    """Hand freed heap memory back to the OS (glibc's malloc_trim; a no-op elsewhere): the per-device slices
    of a few MB come from malloc's arenas, and freed they stayed resident — 0.5 GB over a 2 GB load."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def largest_tensor_bytes(source, dtype) -> int:
    """The largest tensor's bytes in `dtype` (the memory bound's in-flight term)."""
    return max(math.prod(s) for s in source.shapes.values()) * np.dtype(dtype).itemsize
