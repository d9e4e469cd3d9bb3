"""dsc: a graph compiler for neural networks.

`import dsc` stays cheap: the compiler (xdsl, onnx) loads only when a
compiler entry point is first used, so `dsc.runtime` can be imported alone.
"""

from __future__ import annotations

from dsc.runtime.errors import (
    DscError,
    IRError,
    ModelError,
    ShapeError,
    TargetError,
    UnsupportedOpError,
)

__version__ = "0.1.0"


class DscWarning(UserWarning):
    """Something works but deserves attention (e.g. a @dsc.jit cache that keeps recompiling)."""


__all__ = [
    "DscError",
    "DscWarning",
    "IRError",
    "ModelError",
    "ShapeError",
    "TargetError",
    "Tensor",
    "UnsupportedOpError",
    "__version__",
    "compile",
    "import_onnx",
    "jit",
    "nn",
]


def __getattr__(name: str):
    if name == "import_onnx":
        from dsc.frontends.onnx import import_onnx

        return import_onnx
    if name == "compile":
        from dsc.compile_api import compile

        return compile
    if name == "jit":
        from dsc.frontends.trace.jit import jit

        return jit
    if name == "Tensor":
        from dsc.frontends.trace.tensor import Tensor

        return Tensor
    if name == "nn":
        import importlib

        return importlib.import_module("dsc.nn")
    raise AttributeError(f"module 'dsc' has no attribute {name!r}")
