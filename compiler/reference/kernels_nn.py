"""NumPy kernels of the reference evaluator for conv, pooling and normalization (to be filled)."""
