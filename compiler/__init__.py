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

__all__ = [
    "DscError",
    "IRError",
    "ModelError",
    "ShapeError",
    "TargetError",
    "UnsupportedOpError",
    "__version__",
    "compile",
    "import_onnx",
]


def __getattr__(name: str):
    if name == "import_onnx":
        from dsc.frontends.onnx import import_onnx

        return import_onnx
    if name == "compile":
        from dsc.driver import compile

        return compile
    raise AttributeError(f"module 'dsc' has no attribute {name!r}")
