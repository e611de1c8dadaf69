"""Shared code for the notebooks and the CLI: data, training loop, FLOP counting, fused GPU kernels.
Paper files in `papers/` never import from here (they must work when copied alone)."""
