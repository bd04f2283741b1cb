"""EasySpec (arXiv 2502.02493): layer-parallel ("fuzzy") drafting + bonus calibration.

partition.py       the layer groups (official `bound_strategy`), validation, splitting to the mesh
layer_parallel.py  the group step: vmap over stacked weights, or shard_map over the `layer` axis
calibration.py     the calibration policies and the exact pass (unrolled or lax.scan)
drafter.py         `EasySpec`, the drafter the engine runs"""

from jaxspec.easyspec.calibration import CALIBRATIONS, EVERY_MISMATCH, EVERY_ROUND, NEVER, PREFILL_ONLY
from jaxspec.easyspec.drafter import EasySpec, EasySpecState
from jaxspec.easyspec.layer_parallel import ATTN_ONLY, DIRECT_MLP, LAYER, POLICIES
from jaxspec.easyspec.partition import check_groups, default_groups, split_groups

__all__ = [
    "CALIBRATIONS",
    "EVERY_MISMATCH",
    "EVERY_ROUND",
    "NEVER",
    "PREFILL_ONLY",
    "EasySpec",
    "EasySpecState",
    "ATTN_ONLY",
    "DIRECT_MLP",
    "LAYER",
    "POLICIES",
    "check_groups",
    "default_groups",
    "split_groups",
]
