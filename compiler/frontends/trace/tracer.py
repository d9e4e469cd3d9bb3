"""The tracing context: records the tensor operations of one run of a Python function.

A run of the function
---------------------
`branches.trace(fn, ...)` calls `fn` with `Tensor`s standing for its array
arguments. Every operation on a Tensor goes through `Tracer.emit`, which
infers the result's shape and dtype at once (so a shape error names the
user's line) and appends an `Entry` — op class, operand ids, attributes,
result signatures, location — to the run's log. Operations whose operands are
all constants are evaluated on the spot with the reference evaluator and
become constants (so `if` on a constant-only predicate is a plain Python
`if`). Nothing is built in xDSL until the end.

Exploring the runs of a function for each outcome of its tensor `if`s and
merging them into `graph.if` is in branches.py.

Errors point at the user's code: `user_site()` is the first stack frame
outside dsc's own packages.
"""

from __future__ import annotations

import contextlib
import linecache
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from dsc.dialects import graph as g
from dsc.dialects import graph_shapes as S
from dsc.dialects.tensor_types import Sig, content_key, from_attr, sanitize_key, tensor_type, to_attr
from dsc.runtime.errors import DscError, ShapeError

# Results up to this many elements are computed while tracing when all operands are constant.
FOLD_LIMIT = 1 << 16
MAX_DEPTH = 16  # nested data-dependent decisions on one path
MAX_RUNS = 257  # runs of the function per trace (a tree of 128 branch points)


class TraceError(DscError):
    """Code that cannot be traced: a traced tensor turned into a Python value, a side effect, ..."""


class _Pending(BaseException):
    """Raised by a decision past the run's path: the run stops there."""


# ------------------------------------------------------------ user sites


def _dsc_dirs() -> tuple[str, ...]:
    """The folders of dsc's packages (the compiler, dialects, passes, backends, runtime, tools)."""
    import importlib.util

    roots = {os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}
    for sub in ("dialects", "passes", "backends", "runtime", "tools"):
        spec = importlib.util.find_spec(f"dsc.{sub}")
        for loc in (spec.submodule_search_locations or []) if spec else []:
            roots.add(os.path.abspath(loc))
    return tuple(r + os.sep for r in roots)


_DSC_DIRS: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Site:
    """A place in the user's source."""

    filename: str
    lineno: int
    function: str

    @property
    def short(self) -> str:
        return f"{os.path.basename(self.filename)}:{self.lineno}"

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno}"

    def source(self) -> str:
        return linecache.getline(self.filename, self.lineno).strip()


def user_site() -> Site | None:
    """The innermost stack frame outside dsc (and outside torch/numpy internals)."""
    global _DSC_DIRS
    if _DSC_DIRS is None:
        _DSC_DIRS = _dsc_dirs()
    f = sys._getframe(1)
    while f is not None:
        raw = f.f_code.co_filename
        fn = raw if raw.startswith("<") else os.path.abspath(raw)
        if not fn.startswith(_DSC_DIRS) and not fn.startswith("<frozen") and f"{os.sep}torch{os.sep}" not in fn and f"{os.sep}numpy{os.sep}" not in fn:
            return Site(fn, f.f_lineno, f.f_code.co_name)
        f = f.f_back
    return None


def trace_error(what: str, hint: str | None = None, cls: type[DscError] = TraceError, site: Site | None = None) -> DscError:
    """An error located at the user's line: 'file.py:12: what' plus that line's source."""
    site = site or user_site()
    if site is None:
        return cls(what, hint=hint)
    src = site.source()
    return cls(f"{site}: {what}" + (f"\n    {src}" if src else ""), hint=hint)


# ------------------------------------------------------------ the log


@dataclass(eq=False)
class Entry:
    """One recorded op: results get the ids `ids`; a constant holds its array in `const`."""

    op: type
    operands: tuple[int, ...]
    attrs: dict[str, Any]
    results: tuple[Sig, ...]
    ids: tuple[int, ...]
    loc: str
    const: np.ndarray | None = None
    key: str | None = None

    def same_as(self, other: Entry) -> bool:
        if (self.op, self.operands, self.results, self.ids, self.key) != (other.op, other.operands, other.results, other.ids, other.key):
            return False
        if repr(sorted(self.attrs.items())) != repr(sorted(other.attrs.items())):
            return False
        a, b = self.const, other.const
        return a is b or (a is not None and b is not None and a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b))


@dataclass(frozen=True)
class Decision:
    pos: int  # log length when bool() was called
    cond: int  # id of the (one-element bool) predicate
    site: Site | None


@dataclass
class Run:
    log: list[Entry]
    decisions: list[Decision]
    pending: bool
    out_ids: list[int] = field(default_factory=list)
    treedef: Any = None


_STATE = threading.local()


def current() -> Tracer | None:
    """The tracer of the trace in progress on this thread, if any."""
    return getattr(_STATE, "tracer", None)


class Tracer:
    """Records one run of a traced function."""

    def __init__(self, path: tuple[bool, ...], generation: int):
        self.path = path
        self.generation = generation  # tensors of another run are refused
        self.log: list[Entry] = []
        self.decisions: list[Decision] = []
        self.values: dict[int, np.ndarray] = {}  # ids with a value known while tracing
        self.sigs: dict[int, Sig] = {}
        self.next_id = 0
        self.keys: set[str] = set()
        self.scopes: list[str] = []
        self.fixed_loc: str | None = None
        self.guards: dict[int, Callable[[], bool]] = {}  # what must still hold for the trace to be valid

    # -- locations
    def loc(self) -> str:
        if self.fixed_loc is not None:
            return self.fixed_loc
        site = user_site()
        where = site.short if site else "<unknown>"
        return f"{'/'.join(self.scopes)}@{where}" if self.scopes else where

    @contextlib.contextmanager
    def scope(self, name: str):
        self.scopes.append(name)
        try:
            yield
        finally:
            self.scopes.pop()

    @contextlib.contextmanager
    def at(self, loc: str):
        """Give every op emitted inside this location name (frontends with their own node names)."""
        old, self.fixed_loc = self.fixed_loc, loc
        try:
            yield
        finally:
            self.fixed_loc = old

    # -- values
    def _new_ids(self, n: int) -> tuple[int, ...]:
        ids = tuple(range(self.next_id, self.next_id + n))
        self.next_id += n
        return ids

    def wrap(self, vid: int):
        from dsc.frontends.trace.tensor import Tensor

        return Tensor(self, vid, self.sigs[vid])

    def fresh_key(self, hint: str) -> str:
        key = base = sanitize_key(hint)
        n = 0
        while key in self.keys:
            n += 1
            key = f"{base}_{n}"
        self.keys.add(key)
        return key

    def arg(self, sig: Sig):
        (vid,) = self._new_ids(1)
        self.sigs[vid] = sig
        return self.wrap(vid)

    def constant(self, array, hint: str | None = None):
        """A constant tensor; `hint` names its resource (weights keep their parameter names)."""
        arr = np.asarray(array)
        key = self.fresh_key(hint) if hint else content_key("cst", arr)
        (vid,) = self._new_ids(1)
        sig = Sig(tuple(arr.shape), arr.dtype)
        self.sigs[vid] = sig
        self.values[vid] = arr
        self.log.append(Entry(g.ConstantOp, (), {}, (sig,), (vid,), self.loc(), arr, key))
        return self.wrap(vid)

    def value_of(self, t) -> np.ndarray | None:
        return self.values.get(t._id)

    def check(self, t) -> None:
        if t._tr is not self:
            raise trace_error(
                "this tensor belongs to another trace (a traced tensor kept in a global, a closure or a default argument from an earlier call?)",
                hint="traced tensors live only during one call of the @dsc.jit function; pass values as arguments instead",
            )

    # -- ops
    def emit(self, op_cls: type, operands: Sequence, result_types: Sequence[Sig] | None = None, **attrs):
        """Record `op_cls` on tensors; returns a Tensor (or a list for several results)."""
        for t in operands:
            self.check(t)
        py = {k: from_attr(to_attr(v)) for k, v in attrs.items() if v is not None}
        ins = [self.sigs[t._id] for t in operands]
        try:
            if result_types is None:
                outs = [Sig(tuple(s.shape), np.dtype(s.dtype)) for s in op_cls.infer(ins, py)]
            else:
                outs = [Sig(tuple(int(d) for d in s.shape), np.dtype(s.dtype)) for s in result_types]
                if op_cls.EXPLICIT_RESULT:
                    op_cls.infer(ins, py | {"result": outs})
        except S.ShapeMismatch as e:
            shapes = ", ".join(f"{'x'.join(map(str, s.shape)) or 'scalar'} {s.dtype}" for s in ins)
            raise trace_error(f"{op_cls.name}: {e} (operands: {shapes})", cls=ShapeError) from None
        operand_ids = tuple(t._id for t in operands)
        if all(i in self.values for i in operand_ids) and sum(int(np.prod(s.shape)) for s in outs) <= FOLD_LIMIT:
            results = self._fold(op_cls, operand_ids, outs, py)
            if results is not None:
                ts = [self.constant(r) for r in results]
                return ts[0] if len(ts) == 1 else ts
        ids = self._new_ids(len(outs))
        for i, s in zip(ids, outs):
            self.sigs[i] = s
        self.log.append(Entry(op_cls, operand_ids, py, tuple(outs), ids, self.loc()))
        ts = [self.wrap(i) for i in ids]
        return ts[0] if len(ts) == 1 else ts

    def _fold(self, op_cls, operand_ids, outs, py) -> list[np.ndarray] | None:
        from dsc.reference import kernels as _  # noqa: F401  (registers the kernels)
        from dsc.reference.evaluator import KERNELS, evaluate_op

        if op_cls not in KERNELS:
            return None
        arrays = [self.values[i] for i in operand_ids]
        consts = [g.ConstantOp.from_array(a, "fold") for a in arrays]
        op = op_cls.make(consts, result_types=[tensor_type(s.shape, s.dtype) for s in outs], **py)
        return evaluate_op(op, arrays)

    # -- decisions
    def decide(self, cond) -> bool:
        """bool() of a one-element bool tensor: a known value, or the run's next decision."""
        self.check(cond)
        known = self.values.get(cond._id)
        if known is not None:
            return bool(known.reshape(-1)[0])
        site = user_site()
        n = len(self.decisions)
        self.decisions.append(Decision(len(self.log), cond._id, site))
        if n < len(self.path):
            return self.path[n]
        raise _Pending()


# ------------------------------------------------------------ pytrees


def flatten(obj) -> tuple[list, Any]:
    """Tensors and arrays of a nested tuple/list/dict; the rest is static structure."""
    from dsc.frontends.trace.tensor import Tensor

    if isinstance(obj, Tensor):
        return [obj], ("T",)
    if isinstance(obj, tuple | list):
        leaves, defs = [], []
        for o in obj:
            ls, d = flatten(o)
            leaves += ls
            defs.append(d)
        return leaves, (type(obj).__name__, tuple(defs))
    if isinstance(obj, dict):
        leaves, defs = [], []
        for k in obj:
            ls, d = flatten(obj[k])
            leaves += ls
            defs.append(d)
        return leaves, ("dict", tuple(obj), tuple(defs))
    return [], ("S", obj)


def unflatten(treedef, leaves: Sequence):
    it = iter(leaves)

    def build(d):
        kind = d[0]
        if kind == "T":
            return next(it)
        if kind == "S":
            return d[1]
        if kind == "dict":
            return {k: build(c) for k, c in zip(d[1], d[2])}
        items = [build(c) for c in d[1]]
        return tuple(items) if kind == "tuple" else items

    return build(treedef)
