"""Writing an experiment's JSON: every file carries the command line that wrote it and the commit it ran at."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from experiments.common.paths import ROOT


def log(s: str) -> None:
    print(s, file=sys.stderr, flush=True)


def command() -> str:
    """This process's command line in the module form (`python -m experiments.<topic>.<script> ...`)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    prog = f"python -m {spec.name}" if spec is not None and spec.name else f"python {sys.argv[0]}"
    return " ".join([prog, *sys.argv[1:]])


def commit() -> str | None:
    """`git rev-parse HEAD` of the repository (None outside a git checkout); "+dirty" when files differ."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict:
    return {"command": command(), "commit": commit()}


def write_json(result: dict, path) -> Path:
    """jaxspec.bench.write_json (atomic) with this run's `command` and `commit` set at the top level. A file
    that several runs append to also records them per part (a chunk, a set: `provenance()`), since the top
    level names the latest run only; a file keyed by command (hot_vocab.json) records them per key instead
    and is written with jaxspec.bench.write_json."""
    from jaxspec.bench import write_json as write

    return write({**result, **provenance()}, path)


def stamp(path, command_line: str) -> Path:
    """Add `command` (the command that wrote it, e.g. a `python -m jaxspec bench ...` run) and `commit` to a
    JSON another program wrote."""
    import json

    path = Path(path)
    doc = json.loads(path.read_text())
    from jaxspec.bench import write_json as write

    return write({**doc, "command": command_line, "commit": commit()}, path)


if __name__ == "__main__":  # python -m experiments.common.results FILE COMMAND...: stamp FILE (gpu/gpu_check.sh)
    stamp(sys.argv[1], " ".join(sys.argv[2:]))
