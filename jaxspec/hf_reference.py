"""The Hugging Face torch reference used by `bench --hf-baseline`: the same weights (transformers
loads the same GGUF, or the same HF directory) in the run's dtype, greedy `generate` on the same token ids.

torch is a test/benchmark extra only; importing this module without it raises a clear error."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence


def _torch():
    try:
        import torch
    except ImportError:
        raise RuntimeError("--hf-baseline needs torch (pip install -e '.[hf]', which pins torch==2.13.0)") from None
    return torch


def load_hf_model(path: Path, dtype: str = "float32"):
    """AutoModelForCausalLM in `dtype` (a jaxspec dtype name) from a `.gguf` file or a HF directory, in eval
    mode."""
    torch = _torch()
    from transformers import AutoModelForCausalLM

    path, tdtype = Path(path), getattr(torch, dtype)
    if path.suffix == ".gguf":
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=tdtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=tdtype)
    return model.eval()


def hf_generate(
    model,
    ids: Sequence[int],
    max_new_tokens: int,
    eos_ids: Sequence[int],
    assistant=None,
    early_exit: int | None = None,
    prompt_lookup: tuple[int, int] | None = None,
) -> tuple[list[int], float]:
    """Greedy `generate` for one prompt: (new token ids, EOS included; wall seconds, prefill included).
    With `assistant` (a draft model), HF assisted generation with transformers' default assistant
    settings (see `assistant_settings`); with `early_exit` E, HF's self-speculation
    (`assistant_early_exit`: the first E layers draft, sharing weights but not the KV cache); with
    `prompt_lookup` (k, n), HF's prompt lookup decoding (`prompt_lookup_num_tokens` = k,
    `max_matching_ngram_size` = n; HF looks n-grams down to 1 and takes the earliest match)."""
    torch = _torch()
    inp = torch.tensor([list(ids)])
    extra = {} if assistant is None else {"assistant_model": assistant}
    if early_exit is not None:
        extra["assistant_early_exit"] = early_exit
    if prompt_lookup is not None:
        extra["prompt_lookup_num_tokens"], extra["max_matching_ngram_size"] = prompt_lookup
    t = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            inp,
            attention_mask=torch.ones_like(inp),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=list(eos_ids) or None,
            pad_token_id=(list(eos_ids) or [0])[0],
            temperature=None,
            top_p=None,
            top_k=None,
            **extra,
        )
    dt = time.perf_counter() - t
    new = out[0, len(ids) :].tolist()
    if eos_ids:  # generate pads finished rows; keep up to and including the first EOS
        for i, tok in enumerate(new):
            if tok in eos_ids:
                new = new[: i + 1]
                break
    return new, dt


def assistant_settings(assistant) -> dict:
    """The assistant-generation knobs transformers used (recorded in the benchmark JSON)."""
    from transformers import GenerationConfig

    g = assistant.generation_config
    defaults = GenerationConfig._get_default_generation_params()  # what generate() applies to unset fields
    keys = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")
    return {k: getattr(g, k, None) if getattr(g, k, None) is not None else defaults.get(k) for k in keys}
