"""Reading a compiled program's HLO text: its collectives and their replica groups (the planner's round
report, and the tests that pin a program's communication)."""

from __future__ import annotations

import math
import re

COLLECTIVE_RE = re.compile(
    r"= (\S+) (all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(?:-start)?\((.*)"
)


def hlo_collectives(txt: str, groups: bool = False) -> dict:
    """{kind: [result shape]}, or with `groups` [(result shape, devices per replica group)]. Each call site
    counts once (a collective inside a while loop's body is one entry, however many times the loop runs)."""
    found = {}
    for shape, kind, rest in COLLECTIVE_RE.findall(txt):
        shape = shape.split("{")[0]
        found.setdefault(kind, []).append((shape, replica_group_size(rest)) if groups else shape)
    return found


def replica_group_size(hlo_args: str) -> int:
    """Devices per replica group of one collective, from any of XLA's three spellings: explicit groups
    `{{0,1,2,3},{4,5,6,7}}`, iota `[2,4]<=[8]`, or mesh axes `mesh['axis_0'=4,'axis_1'=2] {'axis_0'}`."""
    if m := re.search(r"replica_groups=\{\{([\d,]*)\}", hlo_args):
        return len(m.group(1).split(","))
    if m := re.search(r"replica_groups=\[([\d,]+)\]<=", hlo_args):
        return int(m.group(1).split(",")[-1])
    m = re.search(r"replica_groups=mesh\[([^\]]*)\][^{]*\{([^}]*)\}", hlo_args)
    if m is None:
        if "source_target_pairs" in hlo_args:  # a collective-permute: pairs, not groups
            return 2
        raise ValueError(f"no replica groups in {hlo_args[:200]}")
    sizes = dict(re.findall(r"'(\w+)'=(\d+)", m.group(1)))
    return math.prod(int(sizes[a]) for a in re.findall(r"'(\w+)'", m.group(2)))
