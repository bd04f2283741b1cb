"""Self-speculation: drafters that draft with the target's own first layers in the target's own KV cache
(no draft model): LayerSkip's static exit (`LayerSkip`, the LS baseline), its draft length moved by ±1
(`FSM`, FS), Draft & Verify's confidence-stopped chain with an adapted threshold (`DraftVerify`, DV),
and DEL's dynamic exit and draft length chosen by tokens per layer (`DEL`; its cost model measured on
the machine instead of counted in layers: `RoundCost`, `measure_round_cost`)."""

from jaxspec.selfspec.chain import draft_chain
from jaxspec.selfspec.del_drafter import DEL, DELState, spread_exits
from jaxspec.selfspec.del_trace import DELTrace
from jaxspec.selfspec.draft_verify import DraftVerify, DVState
from jaxspec.selfspec.exit_stats import ExitStats
from jaxspec.selfspec.fsm import FSM
from jaxspec.selfspec.layerskip import LayerSkip, SelfDrafter, check_exit
from jaxspec.selfspec.round_cost import RoundCost, measure_round_cost

__all__ = [
    "LayerSkip",
    "FSM",
    "DraftVerify",
    "DVState",
    "DEL",
    "DELState",
    "DELTrace",
    "ExitStats",
    "SelfDrafter",
    "check_exit",
    "draft_chain",
    "spread_exits",
    "RoundCost",
    "measure_round_cost",
]
