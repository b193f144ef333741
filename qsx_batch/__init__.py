"""qsx-batch: NSGA-II exploration of per-layer quantization and activation sparsity."""

__version__ = "0.1.0"
