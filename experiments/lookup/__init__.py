"""Prompt lookup (NGram) and the cascade: measured against the draft-model chain, and replayed offline.
See README.md."""
