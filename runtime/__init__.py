"""dsc's runtime: loads compiled artifacts (.dsc) and runs them.

    import dsc.runtime
    sess = dsc.runtime.load("model.dsc")
    outputs = sess.run(None, {"input": x})

It imports numpy and llvmlite.binding only: never xdsl, onnx or the compiler
side of dsc, so a service can embed it without the compiler.
"""

from dsc.runtime.errors import ArtifactError, DscError, ShapeError, TargetError
from dsc.runtime.session import NodeArg, Session, load

__all__ = ["ArtifactError", "DscError", "NodeArg", "Session", "ShapeError", "TargetError", "load"]
