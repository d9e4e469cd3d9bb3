"""Tensor types, constant blobs and attribute conversion shared by dsc's dialects.

* `TensorType` (builtin) is the one value type of the graph dialect; this file
  maps it to and from NumPy dtypes and shapes.
* `DenseBlobAttr` holds a constant's data as a read-only NumPy array. Printed,
  a blob is an MLIR `dense_resource<key>` whose bytes live in the file's
  `{-# dialect_resources #-}` section (see `dsc.dialects.asm`), so a dump of a
  whole network stays readable and still parses back.
* `to_attr` / `from_attr` convert op attributes between Python values and
  xDSL attributes (tuples of ints are `array<i64: ...>`).
"""

from __future__ import annotations

import contextvars
import hashlib
from typing import NamedTuple

import ml_dtypes
import numpy as np
from dsc.runtime.errors import IRError
from xdsl.dialects.builtin import (
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    Signedness,
    StringAttr,
    TensorType,
    bf16,
    f16,
    f32,
    f64,
    i1,
    i8,
    i16,
    i32,
    i64,
)
from xdsl.ir import Attribute, Data
from xdsl.irdl import irdl_attr_definition

_DTYPES: list[tuple[np.dtype, Attribute]] = [
    (np.dtype(np.float32), f32),
    (np.dtype(np.float16), f16),
    (np.dtype(ml_dtypes.bfloat16), bf16),  # NumPy kind 'V' (not np.floating): ml_dtypes
    (np.dtype(np.float64), f64),
    (np.dtype(np.int64), i64),
    (np.dtype(np.int32), i32),
    (np.dtype(np.int16), i16),
    (np.dtype(np.int8), i8),
    (np.dtype(np.uint8), IntegerType(8, Signedness.UNSIGNED)),
    (np.dtype(np.uint16), IntegerType(16, Signedness.UNSIGNED)),
    (np.dtype(np.uint32), IntegerType(32, Signedness.UNSIGNED)),
    (np.dtype(np.uint64), IntegerType(64, Signedness.UNSIGNED)),
    (np.dtype(np.bool_), i1),
]
_TO_ELEM = {dt: el for dt, el in _DTYPES}
_FROM_ELEM = {el: dt for dt, el in _DTYPES}
BF16 = bf16
BFLOAT16 = np.dtype(ml_dtypes.bfloat16)  # ml_dtypes' NumPy bfloat16 (2 bytes, float32's exponent range)


class Sig(NamedTuple):
    """A tensor signature in NumPy terms: what shape inference works with."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __str__(self) -> str:
        return f"{'x'.join(map(str, self.shape)) or 'scalar'} {self.dtype}"


def element_type(dtype) -> Attribute:
    dt = np.dtype(dtype)
    if dt not in _TO_ELEM:
        raise IRError(f"dtype {dt} has no dsc element type", hint="use float32, float16, bfloat16, float64, int8..int64, uint8..uint64 or bool")
    return _TO_ELEM[dt]


def numpy_dtype(elem: Attribute) -> np.dtype:
    if elem not in _FROM_ELEM:
        raise IRError(f"element type {elem} has no NumPy equivalent in dsc")
    return _FROM_ELEM[elem]


def tensor_type(shape, dtype) -> TensorType:
    return TensorType(element_type(dtype), [int(d) for d in shape])


def sig_of(t: Attribute) -> Sig:
    if not isinstance(t, TensorType):
        raise IRError(f"expected a tensor type, got {t}")
    return Sig(tuple(int(d) for d in t.get_shape()), numpy_dtype(t.get_element_type()))


def type_of_sig(s: Sig) -> TensorType:
    return tensor_type(s.shape, s.dtype)


def type_str(t: Attribute) -> str:
    """`tensor<1x3xf32>` as MLIR prints it, for error messages."""
    if isinstance(t, TensorType):
        shape = "x".join(str(d) for d in t.get_shape())
        return f"tensor<{shape + 'x' if shape else ''}{t.get_element_type()}>"
    return str(t)


# ---------------------------------------------------------------- blobs

ELIDED = "__elided__"
# Set while printing: constants with more elements print as dense_resource<__elided__>.
ELIDE_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar("dsc_elide_limit", default=None)


class Blob:
    """A constant's data: a read-only array and the key it prints under.

    `array` is None for a constant whose bytes were elided from a dump.
    Equality is by key: keys are unique within a module (imported weights keep
    their sanitized ONNX names, computed constants are named by content hash).
    """

    __slots__ = ("key", "array")

    def __init__(self, key: str, array: np.ndarray | None):
        if array is not None:
            array = np.ascontiguousarray(array).reshape(np.shape(array))  # keeps rank 0
            array.flags.writeable = False
        self.key = key
        self.array = array

    def __eq__(self, other) -> bool:
        if self.key == ELIDED:  # elided blobs are distinct even though they share a key
            return self is other
        return isinstance(other, Blob) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Blob({self.key!r})"


def content_key(hint: str, array: np.ndarray) -> str:
    """A deterministic key for a computed constant: hint + hash of its bytes."""
    h = hashlib.blake2b(digest_size=6)
    h.update(str(array.dtype).encode())
    h.update(str(array.shape).encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return f"{sanitize_key(hint)}_{h.hexdigest()}"


def sanitize_key(name: str) -> str:
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    if not out or not (out[0].isalpha() or out[0] == "_"):
        out = "c_" + out
    return out


@irdl_attr_definition
class DenseBlobAttr(Data[Blob]):
    """Constant data held in memory; printed as a resource handle.

    Generic form: `#graph.blob<"key">` (the bytes travel in the resource section).
    """

    name = "graph.blob"

    @classmethod
    def parse_parameter(cls, parser) -> Blob:
        with parser.in_angle_brackets():
            key = parser.parse_str_literal()
        return Blob(key, None)

    def print_parameter(self, printer) -> None:
        printer.print_string(f'<"{self.data.key}">')


# ---------------------------------------------------------- attributes


def to_attr(value) -> Attribute:
    """Python value -> attribute: tuple/list of ints -> array<i64>, bool, int, float, str."""
    if isinstance(value, Attribute):
        return value
    if isinstance(value, bool | np.bool_):
        return IntegerAttr(int(bool(value)), i1)
    if isinstance(value, int | np.integer):
        return IntegerAttr(int(value), i64)
    if isinstance(value, float | np.floating):
        return FloatAttr(float(value), f32)
    if isinstance(value, str):
        return StringAttr(value)
    if isinstance(value, tuple | list):
        return DenseArrayBase.from_list(i64, [int(v) for v in value])
    raise IRError(f"cannot store {value!r} ({type(value).__name__}) as an attribute")


def from_attr(attr: Attribute):
    """Attribute -> Python value (the inverse of `to_attr`)."""
    if isinstance(attr, DenseArrayBase):
        return tuple(int(v) for v in attr.get_values())
    if isinstance(attr, IntegerAttr):
        if attr.type == i1:
            return bool(attr.value.data)
        return int(attr.value.data)
    if isinstance(attr, FloatAttr):
        return float(attr.value.data)
    if isinstance(attr, StringAttr):
        return attr.data
    return attr


def name_loc(name: str):
    """The location attribute that records an op's source (ONNX node) name."""
    from xdsl.dialects.builtin import NameLoc, NoneAttr

    return NameLoc(StringAttr(name), NoneAttr())


def loc_name(op) -> str | None:
    """The source name recorded on an op (or one of the names of a fused loc)."""
    from xdsl.dialects.builtin import FusedLoc, NameLoc

    loc = getattr(op, "location", None)
    if isinstance(loc, NameLoc):
        return loc.desc.data
    if isinstance(loc, FusedLoc):
        names = [l.desc.data for l in loc.locations if isinstance(l, NameLoc)]
        return ",".join(names) if names else None
    return None
