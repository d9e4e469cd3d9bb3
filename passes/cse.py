"""cse: merge identical pure ops and identical constants.

Input: graph-dialect IR (before or after fusion).

Output: xDSL's CommonSubexpressionElimination applied: of two ops with the
same name, operands, attributes, properties and result types, the later one
is replaced by the earlier one (scoped by regions; `kernel.fused` bodies are
isolated). Constants are compared by content first:

* two `graph.constant`s with the same dtype, shape and bytes are merged
  even when their keys differ (imported weights keep their ONNX names, so
  the same data can arrive under two keys);
* two `graph.constant`s with different data are never merged, even if they
  arrived with the same key (a module stitched together from two sources):
  the later one is re-keyed by content before CSE runs.

Guarantees: results are bit-identical. Constants whose bytes were elided
from a dump (`dense_resource<__elided__>`) are never merged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from dsc.dialects import graph as g
from dsc.dialects.tensor_types import Blob, DenseBlobAttr, content_key
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.transforms.common_subexpression_elimination import cse


def _digest(array: np.ndarray) -> tuple:
    h = hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16)
    return (array.dtype.str, array.shape, h.digest())


def unify_constant_keys(module: ModuleOp) -> int:
    """Give constants with equal data one key and constants with different data
    different keys, so that CSE's key comparison means data comparison.

    Returns how many constants were re-keyed.
    """
    by_content: dict[tuple, Blob] = {}
    content_of_key: dict[str, tuple] = {}
    changed = 0
    for op in module.walk():
        if not isinstance(op, g.ConstantOp) or op.blob.array is None:
            continue
        arr = op.blob.array
        d = _digest(arr)
        first = by_content.get(d)
        if first is not None and np.array_equal(first.array, arr, equal_nan=arr.dtype.kind == "f"):
            if first is not op.blob:
                op.properties["value"] = DenseBlobAttr(first)
                changed += 1
            continue
        blob = op.blob
        if content_of_key.get(blob.key, d) != d:  # same key, other data: make it distinct
            blob = Blob(content_key(blob.key, arr), arr)
            op.properties["value"] = DenseBlobAttr(blob)
            changed += 1
        by_content[d] = blob
        content_of_key[blob.key] = d
    return changed


@dataclass(frozen=True)
class CsePass(ModulePass):
    """Merge identical pure ops; constants are identical when their data is.

    Input: graph-dialect IR. Output: no two equivalent pure ops in one scope;
    no two constants with equal data; results bit-identical.
    """

    name = "cse"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        unify_constant_keys(op)
        cse(op)
