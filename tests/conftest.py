"""Test-session setup (docs/testing.md): the simulated 8-device CPU mesh, which must be configured before
jax is imported anywhere; JAX's persistent compilation cache; the hypothesis profiles; memory hygiene."""

import os
from pathlib import Path

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _compile_cache_dir() -> str | None:
    """JAXSPEC_COMPILE_CACHE=path (empty or "off": no cache), else `$JAXSPEC_CACHE/jax-compile`
    (default ~/.cache/jaxspec/jax-compile) — outside the repository, shared by the xdist workers and by
    later runs. Programs are keyed by their HLO, the jax/XLA version and XLA_FLAGS: a stale entry is
    never reused, only left on disk (`rm -rf` the directory to clear it)."""
    env = os.environ.get("JAXSPEC_COMPILE_CACHE")
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else env
    root = os.environ.get("JAXSPEC_CACHE") or str(Path.home() / ".cache" / "jaxspec")
    return str(Path(root) / "jax-compile")


_CACHE = _compile_cache_dir()
if _CACHE:
    # as environment variables, so that subprocesses (tests/multihost_worker.py) share the cache too
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # the tiny models' programs compile in
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"  # milliseconds each, thousands of them
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))  # LRU-evicted beyond 4 GiB

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
if _CACHE:
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    jax.config.update("jax_compilation_cache_max_size", int(os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"]))

import gc  # noqa: E402

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Hypothesis profiles (HYPOTHESIS_PROFILE=name or pytest --hypothesis-profile=name; default "ci"). Each
# property test states its example budget once, `@settings(max_examples=examples(n))` (tests/helpers.py),
# and the profile scales it by its max_examples / 100:
#   ci       every budget as written; derandomized, so that CI draws the same examples (hence the same
#            static shapes, found in the compile cache) every run and a failure reproduces
#   fast     a quarter of each budget (at least 3), derandomized: the edit loop (make test-fast)
#   explore  4x each budget, random examples with the example database: hunting, not gating
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], print_blob=True)
settings.register_profile("ci", max_examples=100, derandomize=True, database=None, **_COMMON)
settings.register_profile("fast", max_examples=25, derandomize=True, database=None, **_COMMON)
settings.register_profile("explore", max_examples=400, derandomize=False, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def tiny():
    """The small SmolLM2-shaped model's directory for the CLI tests (tests/cli_model.py; 8 layers: exits 1..7)."""
    from tests.cli_model import tiny_smollm_dir

    return str(tiny_smollm_dir())


@pytest.fixture(scope="session")
def tiny_add_greedy(tiny):
    """The small model's greedy continuation of "def add(a, b):" (tests/cli_model.greedy_text)."""
    from tests.cli_model import greedy_text

    return greedy_text(tiny)


@pytest.fixture(scope="session")
def add_greedy():
    """SmolLM2-135M's greedy continuation of "def add(a, b):" (tests/cli_model.greedy_text)."""
    from tests.cli_model import MODEL, greedy_text

    return greedy_text(MODEL)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Each test module compiles its own programs (tiny configs, many static shapes); jax keeps every
    executable alive in its caches for the life of the worker. Two xdist workers on a 24 GiB box then grow
    until XLA aborts mid-compile, so a module's programs are dropped when it ends (the persistent cache
    on disk keeps them: a later module with the same program loads it instead of compiling it)."""
    yield
    jax.clear_caches()
    gc.collect()


def pytest_runtest_logfinish(nodeid, location):
    """JAXSPEC_RSS_LOG=path: append each test's resident memory after it ran (to find the peak), with the
    wall-clock time it finished (the gaps per pid: each test's time, setup and teardown included)."""
    log = os.environ.get("JAXSPEC_RSS_LOG")
    if log:
        import time

        import psutil

        rss = psutil.Process().memory_info().rss / 2**30
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\t{rss:.2f}\t{nodeid}\t{time.time():.1f}\n")
