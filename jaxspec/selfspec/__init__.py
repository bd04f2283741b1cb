"""Self-speculation: drafters that draft with the target's own first layers in the target's own KV cache
(no draft model): LayerSkip's static exit (`LayerSkip`, the LS baseline), Draft & Verify's confidence-stopped
chain with an adapted threshold (`DraftVerify`, DV); DEL's dynamic exit builds on them."""
from jaxspec.selfspec.chain import draft_chain
from jaxspec.selfspec.draft_verify import DraftVerify, DVState
from jaxspec.selfspec.layerskip import LayerSkip, check_exit

__all__ = ["LayerSkip", "DraftVerify", "DVState", "check_exit", "draft_chain"]
