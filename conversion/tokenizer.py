"""Tokenizers through transformers' `AutoTokenizer`, from a GGUF file or a HF directory."""
from __future__ import annotations

from pathlib import Path


def load_tokenizer(path):
    """`AutoTokenizer` for a `.gguf` file (transformers converts the GGUF vocab) or a HF directory."""
    from transformers import AutoTokenizer
    path = Path(path)
    if path.suffix == ".gguf":
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return AutoTokenizer.from_pretrained(str(path))


def encode_prompt(tokenizer, text: str, chat: bool = False, assistant_prefix: str | None = None) -> list[int]:
    """Token ids of `text`; with `chat`, wrapped in the chat template as a user turn (generation prompt
    appended, and `assistant_prefix` pre-filled into the assistant turn when given)."""
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("--chat needs a tokenizer with a chat template; this one has none")
        s = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                          add_generation_prompt=True)
        if assistant_prefix:
            s += assistant_prefix
        return tokenizer(s, add_special_tokens=False)["input_ids"]
    return tokenizer(text)["input_ids"]


def eos_ids(tokenizer, cfg) -> tuple[int, ...]:
    """The stop tokens: the config's EOS plus the tokenizer's (chat models end turns with their own)."""
    ids = set(cfg.eos_token_ids)
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return tuple(sorted(ids))
