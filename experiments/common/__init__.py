"""Code several experiments share: where results go (`paths`), how a result JSON is written with its
command line and commit (`results`), prompt chunks (`chunks`), the interleaved timer (`interleaved`) and
the grouped bar chart (`bars`)."""
