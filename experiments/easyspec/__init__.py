"""EasySpec: acceptance per layer-parallel size, input similarity, draft time, end to end, a modeled GPU table. See
README.md."""
