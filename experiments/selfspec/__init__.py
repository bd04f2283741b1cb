"""DEL and the self-drafting baselines (LayerSkip, FS, DV) on models not trained for early exit. See README.md."""
