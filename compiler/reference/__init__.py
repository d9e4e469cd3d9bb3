"""The NumPy reference evaluator of the graph dialect (the oracle for every pass)."""

from dsc.reference.evaluator import KERNELS, evaluate_op, kernel, run_module

__all__ = ["KERNELS", "evaluate_op", "kernel", "run_module"]
