"""`DELTrace`: what DEL decided in each round (exit, d*, τ) and what came of it, kept on device in
preallocated arrays (one row per round, written inside the jitted loop) and read once at the end."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DELTrace:
    """Per round (index = round number; rows past the last round keep −1 / NaN): the exit in effect (a
    layer count, 0 for a plain decoding step), d*, τ, and the live rows' mean drafted and accepted."""

    exit_layer: jax.Array  # i32[R]
    gamma: jax.Array  # i32[R]
    tau: jax.Array  # f32[R]
    drafted: jax.Array  # f32[R]
    accepted: jax.Array  # f32[R]

    @classmethod
    def empty(cls, rounds: int) -> "DELTrace":
        ints = lambda: jnp.full((rounds,), -1, jnp.int32)  # noqa: E731
        nans = lambda: jnp.full((rounds,), jnp.nan, jnp.float32)  # noqa: E731
        return cls(ints(), ints(), nans(), nans(), nans())

    def record(self, r, exit_layer, gamma, tau, drafted, accepted) -> "DELTrace":
        """Round `r`'s row (dropped past the end)."""
        put = lambda a, v: a.at[r].set(jnp.asarray(v, a.dtype), mode="drop")  # noqa: E731
        return DELTrace(
            put(self.exit_layer, exit_layer),
            put(self.gamma, gamma),
            put(self.tau, tau),
            put(self.drafted, drafted),
            put(self.accepted, accepted),
        )

    def plain_rounds(self, start, count, gamma, tau) -> "DELTrace":
        """Rows start .. start + count − 1 as plain decoding steps (exit 0, nothing drafted)."""
        idx = jnp.arange(self.exit_layer.shape[0])
        run = (idx >= start) & (idx < start + count)
        fill = lambda a, v: jnp.where(run, jnp.asarray(v, a.dtype), a)  # noqa: E731
        return DELTrace(
            fill(self.exit_layer, 0),
            fill(self.gamma, gamma),
            fill(self.tau, tau),
            fill(self.drafted, 0.0),
            fill(self.accepted, 0.0),
        )

    def report(self, rounds: int) -> dict:
        """The first `rounds` rows as lists (host)."""
        r = int(rounds)
        return {
            "exit_layer": [int(x) for x in self.exit_layer[:r]],
            "gamma": [int(x) for x in self.gamma[:r]],
            "tau": [float(x) for x in self.tau[:r]],
            "drafted": [float(x) for x in self.drafted[:r]],
            "accepted": [float(x) for x in self.accepted[:r]],
        }
