"""Reading and writing dsc IR as MLIR text.

`print_module` writes a module with each op's source location
(`loc("onnx node name")`) and the bytes of every large constant in MLIR's
`{-# dialect_resources: { builtin: { key: "0x<align><hex>" } } #-}` section,
so the body stays readable and the whole file parses back with
`parse_module`. `elide_larger_than=N` prints constants of more than N
elements as `dense_resource<__elided__>` (readable, but not runnable).
"""

from __future__ import annotations

import io
import threading
import re

import numpy as np
from dsc.dialects.graph import ConstantOp, Graph
from dsc.dialects.kernel import Kernel
from dsc.dialects.tensor_types import ELIDE_LIMIT, ELIDED, numpy_dtype
from dsc.runtime.errors import IRError

_PARSE_LOCK = threading.Lock()
from xdsl.context import Context
from xdsl.dialect_interfaces.op_asm import OpAsmDialectInterface
from xdsl.dialects import func
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.printer import Printer
from xdsl.utils.exceptions import ParseError, VerifyException

_EXTRA_DIALECTS: list = []


def register_dialect(dialect) -> None:
    """Make a further dialect (kernel, mem, ...) known to `make_context`."""
    if dialect not in _EXTRA_DIALECTS:
        _EXTRA_DIALECTS.append(dialect)


def make_context() -> Context:
    ctx = Context()
    for d in (Builtin, func.Func, Graph, Kernel, *_EXTRA_DIALECTS):
        ctx.load_dialect(d)
    return ctx


def _blob_hex(arr: np.ndarray) -> str:
    align = max(arr.dtype.itemsize, 1).to_bytes(4, "little")
    return "0x" + (align + np.ascontiguousarray(arr).tobytes()).hex().upper()


def print_module(module: ModuleOp, *, elide_larger_than: int | None = None) -> str:
    """The module as MLIR text, with locations and a resource section."""
    token = ELIDE_LIMIT.set(elide_larger_than)
    try:
        out = io.StringIO()
        Printer(out, print_debuginfo=True).print_op(module)
    finally:
        ELIDE_LIMIT.reset(token)
    text = re.sub(r" loc\(unknown\)", "", out.getvalue())
    blobs: dict[str, str] = {}
    for op in module.walk():
        if isinstance(op, ConstantOp):
            arr = op.blob.array
            if arr is None or arr.size <= ConstantOp.INLINE_LIMIT and arr.dtype.kind in "fiub":
                continue
            if elide_larger_than is not None and arr.size > elide_larger_than:
                continue
            blobs.setdefault(op.blob.key, _blob_hex(arr))
    if blobs:
        body = ",\n".join(f'      {k}: "{v}"' for k, v in sorted(blobs.items()))
        text += "\n\n{-#\n  dialect_resources: {\n    builtin: {\n" + body + "\n    }\n  }\n#-}"
    return text + "\n"


def parse_module(text: str, source: str = "<input>", ctx: Context | None = None) -> ModuleOp:
    """Parse MLIR text into a verified module whose constants hold their data."""
    from xdsl.parser import Parser

    ctx = ctx or make_context()
    resources = ctx.get_optional_dialect("builtin").get_interface(OpAsmDialectInterface)
    with _PARSE_LOCK:
        # xDSL keeps resource blobs on the (process-wide) Builtin dialect: start each parse empty
        if resources is not None:
            resources._blob_storage.clear()
        try:
            module = Parser(ctx, text, source).parse_module()
        except ParseError as e:
            raise IRError(f"{source}: the IR does not parse:\n{e}", hint="check the op syntax against `dsc compile --emit graph` output") from None
        blobs = dict(resources._blob_storage) if resources is not None else {}
        if resources is not None:
            resources._blob_storage.clear()
    for op in module.walk():
        if isinstance(op, ConstantOp) and op.blob.array is None and op.blob.key != ELIDED:
            hexdata = blobs.get(op.blob.key)
            if hexdata:
                raw = bytes.fromhex(hexdata[2:])[4:]
                t = op.result.type
                dt = numpy_dtype(t.get_element_type())
                shape = tuple(t.get_shape())
                arr = np.frombuffer(raw, dtype=dt)
                if arr.size != int(np.prod(shape)):
                    raise IRError(f"{source}: resource {op.blob.key} holds {arr.size} elements, its constant needs {int(np.prod(shape))}")
                op.blob.array = arr.reshape(shape)
    try:
        module.verify()
    except VerifyException as e:
        raise IRError(f"{source}: the IR does not verify: {e}") from None
    return module
