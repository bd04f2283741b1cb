"""EasySpec's layer partition (the official `bound_strategy`): an ordered partition of the draft's layers
0..L-1 into groups of consecutive layers. A singleton runs as a plain layer; a group of N layers runs its
N attention blocks in parallel from the group's input (layer_parallel.py).

Default (paper: the first and last layers are the most sensitive and stay sequential):
    [[0], ..., [head-1]] + consecutive chunks of `parallel` over the middle + [[L-tail]], ..., [[L-1]]
with a final shorter chunk still parallel. A group larger than the mesh's `layer` axis is split into
chunks of the axis size, the last possibly shorter, as the official `modify_strategy` does."""

from __future__ import annotations

import logging
from typing import Sequence

Groups = tuple[tuple[int, ...], ...]
log = logging.getLogger(__name__)


def default_groups(num_layers: int, parallel: int, head: int = 1, tail: int = 1) -> Groups:
    """`head` and `tail` sequential layers around the middle layers in consecutive groups of `parallel`."""
    if parallel < 1:
        raise ValueError(f"invalid layer groups: parallel size must be >= 1, got {parallel}")
    if head < 0 or tail < 0 or head + tail > num_layers:
        raise ValueError(
            f"invalid layer groups: head={head} and tail={tail} sequential layers do not fit in "
            f"the draft's {num_layers} layers"
        )
    middle = list(range(head, num_layers - tail))
    groups = [(l,) for l in range(head)]
    groups += [tuple(middle[i : i + parallel]) for i in range(0, len(middle), parallel)]
    groups += [(l,) for l in range(num_layers - tail, num_layers)]
    return tuple(groups)


def check_groups(groups: Sequence[Sequence[int]], num_layers: int) -> Groups:
    """Validate an explicit partition: every layer exactly once, in order, groups non-empty. Each error
    names the offending layer or group."""
    groups = tuple(tuple(int(l) for l in g) for g in groups)
    seen: dict[int, int] = {}
    for gi, g in enumerate(groups):
        if not g:
            raise ValueError(f"invalid layer groups: group {gi} is empty")
        for l in g:
            if not 0 <= l < num_layers:
                raise ValueError(
                    f"invalid layer groups: layer {l} in group {gi} is outside the draft's layers 0..{num_layers - 1}"
                )
            if l in seen:
                raise ValueError(f"invalid layer groups: layer {l} appears in group {seen[l]} and group {gi}")
            seen[l] = gi
    missing = [l for l in range(num_layers) if l not in seen]
    if missing:
        raise ValueError(f"invalid layer groups: layers {missing} are in no group (a gap)")
    flat = [l for g in groups for l in g]
    if flat != list(range(num_layers)):
        bad = next(i for i, l in enumerate(flat) if l != i)
        raise ValueError(
            f"invalid layer groups: groups must list consecutive layers in order, but layer "
            f"{flat[bad]} comes where layer {bad} belongs ({[list(g) for g in groups]})"
        )
    return groups


def split_groups(groups: Groups, axis_size: int) -> Groups:
    """Groups larger than the `layer` axis, split into chunks of `axis_size` (the last possibly shorter)."""
    if axis_size < 1:
        raise ValueError(f"layer axis size must be >= 1, got {axis_size}")
    out: list[tuple[int, ...]] = []
    for g in groups:
        if len(g) > axis_size:
            chunks = [g[i : i + axis_size] for i in range(0, len(g), axis_size)]
            log.warning(
                "EasySpec: group %s is larger than the layer axis (%d devices): split into %s",
                list(g),
                axis_size,
                [list(c) for c in chunks],
            )
            out += chunks
        else:
            out.append(g)
    return tuple(out)


def describe(groups: Groups) -> str:
    """Compact text, e.g. '[0] [1-4] [5-8] [9]'."""
    return " ".join(f"[{g[0]}]" if len(g) == 1 else f"[{g[0]}-{g[-1]}]" for g in groups)
