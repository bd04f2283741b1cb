"""Where the experiments read and write: experiments/results/<topic>/ for the files the docs cite, the
shared recording of the 1.5B's greedy continuations, and the asset cache for large regenerable inputs."""

from __future__ import annotations

from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parents[1]
ROOT = EXPERIMENTS.parent  # the repository: run `python -m experiments.<topic>.<script>` from here
RESULTS = EXPERIMENTS / "results"
# each prompt's greedy target continuation (experiments/easyspec/easyspec_data.py writes them; the EasySpec,
# lookup and hot-vocabulary replays read them)
CONTINUATIONS = RESULTS / "continuations"


def results_dir(topic: str) -> Path:
    """experiments/results/<topic>/ (not created: the writers create it)."""
    return RESULTS / topic


def cache_dir() -> Path:
    """Large inputs a script can regenerate, kept out of git: the asset cache's experiments/ folder."""
    from jaxspec.paths import cache_dir as assets

    return assets() / "experiments"
