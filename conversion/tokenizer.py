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
        s = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        if assistant_prefix:
            s += assistant_prefix
        return tokenizer(s, add_special_tokens=False)["input_ids"]
    return tokenizer(text)["input_ids"]


# End-of-text / end-of-turn markers; a GGUF names one EOS, HF generation configs list several (Qwen2.5
# stops on both <|im_end|> and <|endoftext|>). Only *special* tokens of the tokenizer count.
END_MARKERS = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|end|>", "<end_of_turn>", "</s>")


def eos_ids(tokenizer, cfg) -> tuple[int, ...]:
    """The stop tokens: the config's EOS, the tokenizer's, and its special end-of-text/turn markers."""
    ids = set(cfg.eos_token_ids)
    if tokenizer is not None:
        if tokenizer.eos_token_id is not None:
            ids.add(int(tokenizer.eos_token_id))
        special = set(tokenizer.all_special_tokens)
        ids.update(int(tokenizer.convert_tokens_to_ids(t)) for t in END_MARKERS if t in special)
    return tuple(sorted(ids))
