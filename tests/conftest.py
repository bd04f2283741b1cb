"""Simulated 8-device CPU mesh: must be configured before jax is imported anywhere."""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

import gc  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Each test module compiles its own programs (tiny configs, many static shapes); jax keeps every
    executable alive in its caches for the life of the worker. Two xdist workers on a 24 GiB box then grow
    until XLA aborts mid-compile, so a module's programs are dropped when it ends."""
    yield
    jax.clear_caches()
    gc.collect()


def pytest_runtest_logfinish(nodeid, location):
    """JAXSPEC_RSS_LOG=path: append each test's resident memory after it ran (to find the peak)."""
    log = os.environ.get("JAXSPEC_RSS_LOG")
    if log:
        import psutil
        rss = psutil.Process().memory_info().rss / 2**30
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\t{rss:.2f}\t{nodeid}\n")
