"""The tracing frontend: `@dsc.jit`, the traced `Tensor` and `dsc.nn`.

tracer.py records the tensor operations of one run of a Python function;
branches.py runs it once per outcome of each `if` on a tensor and merges the
runs into a graph-dialect module with `graph.if`; tensor.py (with
indexing.py) is the traced Tensor with NumPy's habits; functional.py and
nn.py are the layers; jit.py compiles and caches per input signature;
hybrid.py runs `graph.if` on native targets.
"""

from dsc.frontends.trace.jit import JitFunction, jit
from dsc.frontends.trace.tensor import Tensor
from dsc.frontends.trace.tracer import TraceError

__all__ = ["JitFunction", "Tensor", "TraceError", "jit"]
