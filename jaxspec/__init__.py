"""jaxspec: speculative decoding for JAX on sharded accelerators."""

from jaxspec.cache import KVCache, init_cache
from jaxspec.config import ModelConfig, RopeScaling, config_from_hf
from jaxspec.decode import DecodeSpec, DecodeState, decode_loop, generate, output_ids, pad_prompts, prefill
from jaxspec.model import embed, forward, head, run_layers
from jaxspec.params import init_params, param_info
from jaxspec.runner import RunResult, VanillaRunner
from jaxspec.sampling import GREEDY, SamplingConfig
from jaxspec.sharding import make_mesh, plan_for, shard_params
from jaxspec.speculative import DraftModel, SpecMethod, chain, run_speculation, speculate, tree


def load_model(model, **kwargs):
    """Registry name, `.gguf` path or HF directory → `conversion.loader.LoadedModel` (see there)."""
    from conversion.loader import load_model as _load

    return _load(model, **kwargs)


__all__ = [
    "KVCache",
    "init_cache",
    "ModelConfig",
    "RopeScaling",
    "config_from_hf",
    "DecodeSpec",
    "DecodeState",
    "decode_loop",
    "generate",
    "output_ids",
    "pad_prompts",
    "prefill",
    "embed",
    "forward",
    "head",
    "run_layers",
    "init_params",
    "param_info",
    "RunResult",
    "VanillaRunner",
    "GREEDY",
    "SamplingConfig",
    "make_mesh",
    "plan_for",
    "shard_params",
    "load_model",
    "DraftModel",
    "SpecMethod",
    "chain",
    "run_speculation",
    "speculate",
    "tree",
]
