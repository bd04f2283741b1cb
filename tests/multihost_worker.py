"""One process of tests/test_multihost.py (also runnable by hand): joins a multi-process run over
127.0.0.1, builds the tiny target/draft pair every process builds alike, and runs vanilla and speculative
generation on one global tp mesh (4 host devices per process). The primary process writes the tokens.

    python tests/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT OUT.json [HF_DIR CHECKPOINT_ROOT]"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(pid: int, nproc: int, port: int, out: str, hf_dir: str | None = None, root: str | None = None) -> None:
    from jaxspec import distributed

    assert distributed.initialize(f"127.0.0.1:{port}", nproc, pid)
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    from tests.multihost_case import load_case, run_case

    result = run_case()
    if hf_dir is not None:
        result["load"] = load_case(hf_dir, root)
    result["process_count"], result["device_count"] = jax.process_count(), jax.device_count()
    if distributed.is_primary():
        with open(out, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:])
