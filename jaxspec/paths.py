"""Where jaxspec keeps what it makes on a machine: converted checkpoints, fetched model files, measured
round costs, the compile cache of the tests — `$JAXSPEC_CACHE`, default ~/.cache/jaxspec."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("JAXSPEC_CACHE", Path.home() / ".cache" / "jaxspec"))
