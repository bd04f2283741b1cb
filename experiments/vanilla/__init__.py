"""Vanilla decoding: the baseline benchmark, the attention and weight-layout microbenchmarks, bf16 parity. See
README.md."""
