"""Two processes on localhost (CPU, 4 host devices each, coordinator on 127.0.0.1) form one 8-device mesh:
vanilla and speculative generation there (tp = 8, and vanilla on data × tp = 2 × 4, the batch split over
data) give the tokens a single process gives on 8 devices, and a model
converted, saved (orbax's multi-process save) and restored there gives the single process's logits."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import hf_tiny
from tests.multihost_case import load_case, run_case

WORKER = Path(__file__).with_name("multihost_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.xdist_group("multihost")
def test_two_processes_equal_one(tmp_path):
    out, port = tmp_path / "tokens.json", _free_port()
    hf_tiny("qwen2").save_pretrained(tmp_path / "hf")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(i),
                "2",
                str(port),
                str(out),
                str(tmp_path / "hf"),
                str(tmp_path / "ckpt"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=600)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    got = json.loads(out.read_text())
    assert (got.pop("process_count"), got.pop("device_count")) == (2, 8)
    load = got.pop("load")
    want = run_case()  # this process: 8 simulated devices (conftest), the same mesh shape
    assert got == want
    assert want["chain_accepted"] > 0 and want["vanilla"] == want["chain"] == want["tree"]
    assert got["sharded_rows"] == np.arange(24).reshape(8, 3).tolist()  # gathered from both processes
    assert want["data_vanilla"][:3] == want["vanilla"]  # the batch split over data: the same tokens per row
    assert (load["converted"]["from_checkpoint"], load["restored"]["from_checkpoint"]) == (False, True)
    assert (tmp_path / "ckpt").is_dir() and not list((tmp_path / "ckpt").glob("*.tmp-*"))  # renamed into place
    ref = load_case(tmp_path / "hf", tmp_path / "ckpt1")
    assert load["converted"]["logits"] == load["restored"]["logits"]  # the same weights, the same program
    # streamed conversion: each process read its own 4 devices' slices (a replicated tensor once per process):
    # less than the whole checkpoint, the two together all of it and no more than once more per process
    a, b = load["bytes_read"]
    assert a == b < ref["bytes_read"][0] <= a + b
    # gloo's cross-process all-reduce sums in another order than the in-process one: last-bit differences
    np.testing.assert_allclose(load["converted"]["logits"], ref["converted"]["logits"], atol=1e-4)


def test_initialize_errors_and_the_single_process_default(monkeypatch):
    """Bad multi-process settings fail before jax.distributed is touched; none at all is a single process."""
    from jaxspec import distributed

    for k in distributed.ENV:
        monkeypatch.delenv(k, raising=False)
    assert distributed.initialize() is False
    with pytest.raises(ValueError, match="give the coordinator address too"):
        distributed.initialize(num_processes=2, process_id=0)
    with pytest.raises(ValueError, match="process id 2 of 2 processes is not valid"):
        distributed.initialize("127.0.0.1:1", 2, 2)
    monkeypatch.setenv("JAXSPEC_COORDINATOR", "127.0.0.1:1")
    with pytest.raises(ValueError, match="process id -1 of 0 processes is not valid"):
        distributed.initialize()
    monkeypatch.setenv("JAXSPEC_NUM_PROCESSES", "2")
    with pytest.raises(ValueError, match="process id -1 of 2"):
        distributed.initialize()
