"""dsc's runtime: loads compiled artifacts and runs them.

It imports numpy and llvmlite.binding only: never xdsl, onnx or the compiler
side of dsc, so a service can embed it without the compiler.
"""

from dsc.runtime.errors import DscError

__all__ = ["DscError"]
