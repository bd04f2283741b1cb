"""What the planner (`jaxspec.plan`) plans for: the papers' model pairs as configs (no weights), accelerator
figures, and the devices to compile for — a TPU topology through libtpu, or this host's simulated CPU devices
standing in for GPUs.

Configs are the models' published Hugging Face `config.json` fields (read through `config_from_hf`, as a
loaded checkpoint's would be). Accelerator figures are per chip and public (vendor spec sheets); the
collective latency is an assumption, and labelled so wherever it is used."""

from __future__ import annotations

import dataclasses

from jaxspec.config import ModelConfig, config_from_hf

_LLAMA3 = dict(
    architectures=["LlamaForCausalLM"],
    model_type="llama",
    vocab_size=128256,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    max_position_embeddings=8192,
    tie_word_embeddings=False,
    bos_token_id=128000,
    eos_token_id=128009,
)
_QWEN2 = dict(
    architectures=["Qwen2ForCausalLM"],
    model_type="qwen2",
    vocab_size=152064,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    max_position_embeddings=32768,
    tie_word_embeddings=False,
    eos_token_id=151645,
)


def _hf(base: dict, D: int, F: int, L: int, H: int, Hkv: int, **kw) -> dict:
    return base | dict(
        hidden_size=D, intermediate_size=F, num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=Hkv, **kw
    )


HF_CONFIGS: dict[str, dict] = {
    "llama-3-70b": _hf(_LLAMA3, 8192, 28672, 80, 64, 8),
    "llama-3-8b": _hf(_LLAMA3, 4096, 14336, 32, 32, 8),
    "qwen2-72b": _hf(_QWEN2, 8192, 29568, 80, 64, 8),
    "qwen2-7b": _hf(_QWEN2, 3584, 18944, 28, 28, 4),
    "llama-2-7b": _hf(
        _LLAMA3,
        4096,
        11008,
        32,
        32,
        32,
        vocab_size=32000,
        rope_theta=10000.0,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
    ),  # fmt: skip
    "llama-3.2-1b": _hf(
        _LLAMA3,
        2048,
        8192,
        16,
        32,
        8,
        head_dim=64,
        tie_word_embeddings=True,
        max_position_embeddings=131072,
        rope_scaling=dict(
            rope_type="llama3",
            factor=32.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=8192,
        ),
    ),  # fmt: skip
}


@dataclasses.dataclass(frozen=True)
class Preset:
    """A paper's setting: the target, the draft (None: self-speculation) and the method it was run with."""

    target: str
    draft: str | None
    method: str
    paper: str


PRESETS: dict[str, Preset] = {
    "llama3-70b+8b": Preset("llama-3-70b", "llama-3-8b", "easyspec", "EasySpec (Llama-3-70B-Instruct + 8B)"),
    "qwen2-72b+7b": Preset("qwen2-72b", "qwen2-7b", "easyspec", "EasySpec (Qwen2-72B-Instruct + 7B)"),
    "layerskip-llama2-7b": Preset("llama-2-7b", None, "del", "DEL (LayerSkip Llama-2-7B)"),
    "layerskip-llama3-8b": Preset("llama-3-8b", None, "del", "DEL (LayerSkip Llama-3-8B)"),
    "layerskip-llama3.2-1b": Preset("llama-3.2-1b", None, "del", "DEL (LayerSkip Llama-3.2-1B)"),
}


def model_config(name: str) -> ModelConfig:
    if name not in HF_CONFIGS:
        raise ValueError(f"unknown model config {name!r}: one of {', '.join(HF_CONFIGS)} (or --config FILE)")
    return config_from_hf(HF_CONFIGS[name])


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: one of {', '.join(PRESETS)}")
    return PRESETS[name]


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """Per chip: memory, its bandwidth, and the interconnect's (one direction) — public spec figures."""

    name: str
    hbm_gib: float
    hbm_gb_per_s: float
    link_gb_per_s: float


ACCELERATORS = {
    "v4": Accelerator("TPU v4", 32, 1200, 300),
    "v5e": Accelerator("TPU v5e", 16, 819, 200),
    "v5p": Accelerator("TPU v5p", 95, 2765, 600),
    "v6e": Accelerator("TPU v6e", 32, 1640, 448),
    "h100": Accelerator("NVIDIA H100 SXM (simulated CPU devices)", 80, 3350, 450),
}


def tpu_devices(topology: str):
    """The devices of a TPU topology, e.g. "v5e:2x2", compiled for through libtpu on any host (no TPU
    needed): `pip install -e '.[tpu-plan]'`."""
    generation = topology.split(":")[0]
    if generation not in ACCELERATORS or generation == "h100" or ":" not in topology:
        raise ValueError(
            f"unknown TPU topology {topology!r}: GENERATION:SHAPE with GENERATION one of v4, v5e, v5p, v6e"
        )
    try:
        import libtpu  # noqa: F401
    except ImportError as e:
        raise ValueError(
            "planning for a TPU topology needs libtpu: pip install -e '.[tpu-plan]' (jax[tpu] for this jax)"
        ) from e
    import os

    from jax.experimental import topologies

    # compile-only: no chip is opened, so other processes may load libtpu at the same time (its lockfile
    # otherwise refuses a second one: two test workers, a planner beside a test run)
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        return list(topologies.get_topology_desc(platform="tpu", topology_name=topology).devices)
    except Exception as e:  # libtpu's own errors for a shape it does not know
        raise ValueError(f"libtpu does not know the topology {topology!r}: {e}") from e
