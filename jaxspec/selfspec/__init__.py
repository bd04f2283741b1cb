"""Self-speculation: drafters that draft with the target's own first layers in the target's own KV cache
(no draft model): LayerSkip's static exit (`LayerSkip`, the LS baseline); DEL's dynamic exit builds on it."""
from jaxspec.selfspec.layerskip import LayerSkip, check_exit

__all__ = ["LayerSkip", "check_exit"]
