"""Multi-host: one process per host, every process running the same program on its own devices
(JAX's multi-controller model), one global mesh over all of them.

    jaxspec.distributed.initialize()        # before anything touches a device; reads JAXSPEC_COORDINATOR...

Each process loads the same weights and prompts (the loader converts or restores on every host and places
its own shards); jitted functions take the same arguments everywhere; values come back to the host through
`to_host`, which works whether or not an array is fully addressable from this process (a plain
`np.asarray` on a global array fails when some of its shards live on another host). Only the primary
process prints and writes files (`is_primary`)."""

from __future__ import annotations

import os

import jax
import numpy as np

ENV = ("JAXSPEC_COORDINATOR", "JAXSPEC_NUM_PROCESSES", "JAXSPEC_PROCESS_ID")


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> bool:
    """`jax.distributed.initialize` from the arguments, else the JAXSPEC_COORDINATOR ("host:port"),
    JAXSPEC_NUM_PROCESSES and JAXSPEC_PROCESS_ID environment variables. With neither, nothing happens
    (single process; on a TPU pod slice or a SLURM job jax finds them itself: call
    `jax.distributed.initialize()` directly). CPU cross-process collectives go through gloo. Returns
    whether a multi-process run was set up."""
    coordinator = coordinator or os.environ.get(ENV[0])
    if coordinator is None:
        if num_processes is not None or process_id is not None:
            raise ValueError("multi-process run: give the coordinator address too (--coordinator HOST:PORT)")
        return False
    num_processes = int(num_processes if num_processes is not None else os.environ.get(ENV[1], 0))
    process_id = int(process_id if process_id is not None else os.environ.get(ENV[2], -1))
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(
            f"multi-process run: process id {process_id} of {num_processes} processes is not valid "
            f"(set {ENV[1]} and {ENV[2]}, or --num-processes / --process-id)"
        )
    # the CPU client's cross-process collectives (a CPU run's only ones; unused by a GPU / TPU run's arrays)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    return True


def is_primary() -> bool:
    return jax.process_index() == 0


def to_host(tree):
    """numpy copies of every array in `tree`, on every process: fully addressable arrays directly,
    replicated ones from a local shard, the rest gathered across processes (a collective: every process
    must call it, in the same order)."""
    from jax.experimental import multihost_utils

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(x)
        if x.sharding.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)
