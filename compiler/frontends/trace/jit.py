"""`dsc.jit`: trace a Python function on its first call, compile it, cache it per input signature.

    @dsc.jit                                # target="host"; also @dsc.jit(target="reference")
    def f(x):
        y = x * 2 + 1
        if y.mean() > 0:                    # becomes graph.if, both sides traced
            return dsc.nn.ReLU()(y)
        return dsc.nn.LeakyReLU(0.1)(y)

    f(x)                                    # trace, compile, run; later calls just run
    f.lower(x)                              # the graph-dialect module (print with dsc.dialects.asm.print_module)
    f.compile(x, target="x86-64-v3")        # artifact bytes for dsc.runtime.load
    f.cache_info()                          # hits, misses, compiles, size, maxsize

Signatures. Arrays (NumPy arrays and scalars, anything with `__array__`),
also inside tuples, lists and dicts, are traced inputs: their shapes and
dtypes are the signature. Everything else (Python numbers, strings, modules)
is a compile-time constant and part of the signature by value (a new value
recompiles). Each signature's compiled form is kept in an LRU cache of
`cache_size` entries (8); compiling a new signature into a full cache evicts
the least recently used one and warns (`dsc.DscWarning`): a function called
with ever-changing shapes recompiles all the time. A trace also remembers the
`dsc.nn` modules whose parameters it read; reassigning one of their
parameters retraces on the next call.

Targets. `reference` evaluates the traced module with the NumPy reference
evaluator (no native code: fast to build, slow to run). Any other target
(host by default) compiles with the full pipeline to native code and runs it
through `dsc.runtime`.

graph.if on native targets: the hybrid executor. The CPU backend compiles
straight-line kernels only, so a traced function whose IR holds `graph.if`
runs as several native artifacts (see hybrid.py): @main is split at each
`graph.if` into pieces (the prefix computing the predicate and the values the
branches use, then each branch's ops, recursively), every piece is compiled
natively, and at run time Python reads the predicate and runs only the
pieces of the branch it selects. `f.compile(...)`, which must give one
artifact, if-converts instead: both branches are compiled and `graph.where`
selects their results (both sides are computed; the results are exact).
"""

from __future__ import annotations

import functools
import inspect
import threading
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from dsc.dialects.tensor_types import Sig
from dsc.frontends.trace import hybrid
from dsc.frontends.trace.branches import Traced, trace
from dsc.frontends.trace.tracer import TraceError, Tracer, current, trace_error, unflatten
from dsc.runtime.errors import DscError

DEFAULT_CACHE_SIZE = 8


class CacheInfo(NamedTuple):
    hits: int
    misses: int
    compiles: int
    size: int
    maxsize: int


# ------------------------------------------------------------ input signatures


def _is_array(x) -> bool:
    from dsc.frontends.trace.nn import Module
    from dsc.frontends.trace.tensor import Tensor

    if isinstance(x, np.ndarray | np.generic):
        return True
    return hasattr(x, "__array__") and not isinstance(x, Tensor | Module | type)


def _flatten_inputs(obj, name: str, arrays: list, names: list):
    if _is_array(obj):
        arrays.append(np.asarray(obj))
        names.append(name)
        return ("A",)
    if isinstance(obj, tuple | list):
        return (type(obj).__name__, tuple(_flatten_inputs(o, f"{name}_{i}", arrays, names) for i, o in enumerate(obj)))
    if isinstance(obj, dict):
        return ("dict", tuple(obj), tuple(_flatten_inputs(v, f"{name}_{k}", arrays, names) for k, v in obj.items()))
    try:
        hash(obj)
    except TypeError:
        raise trace_error(f"argument '{name}' ({type(obj).__name__}) is neither an array nor hashable", hint="pass arrays, or hashable constants (numbers, strings, tuples)") from None
    return ("S", obj)


def _unflatten_inputs(treedef, leaves):
    it = iter(leaves)

    def build(d):
        if d[0] == "A":
            return next(it)
        if d[0] == "S":
            return d[1]
        if d[0] == "dict":
            return {k: build(c) for k, c in zip(d[1], d[2])}
        items = [build(c) for c in d[1]]
        return tuple(items) if d[0] == "tuple" else items

    return build(treedef)


def _param_names(fn, nargs: int) -> list[str]:
    from dsc.frontends.trace.nn import Module

    fn = fn.forward if isinstance(fn, Module) else fn
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = []
    for i in range(nargs):
        p = params[i] if i < len(params) and params[i].kind in (params[i].POSITIONAL_ONLY, params[i].POSITIONAL_OR_KEYWORD) else None
        names.append(p.name if p else f"arg{i}")
    return names


@dataclass
class _Signature:
    key: Any
    arrays: list[np.ndarray]
    names: list[str]
    treedef: Any

    def describe(self) -> str:
        parts = [f"{n}: {'x'.join(map(str, a.shape)) or 'scalar'} {a.dtype}" for n, a in zip(self.names, self.arrays)]
        return "(" + ", ".join(parts) + ")"


def signature_of(fn, args: tuple, kwargs: dict) -> _Signature:
    arrays: list[np.ndarray] = []
    names: list[str] = []
    pnames = _param_names(fn, len(args))
    defs = tuple(_flatten_inputs(a, n, arrays, names) for a, n in zip(args, pnames))
    kdefs = tuple((k, _flatten_inputs(v, k, arrays, names)) for k, v in sorted(kwargs.items()))
    treedef = (defs, kdefs)
    key = (treedef, tuple((a.shape, a.dtype.str) for a in arrays))
    # unique, valid names for the module's arguments
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen:
            seen[n] += 1
            names[i] = f"{n}_{seen[n]}"
        else:
            seen[n] = 0
    return _Signature(key, arrays, names, treedef)


def trace_call(fn: Callable, sig: _Signature, name: str | None = None) -> Traced:
    """Trace fn for the inputs of `sig` (arrays become tensor arguments)."""
    sigs = [Sig(tuple(a.shape), a.dtype) for a in sig.arrays]
    defs, kdefs = sig.treedef

    def make_inputs(tr: Tracer):
        return _unflatten_call(defs, kdefs, [tr.arg(s) for s in sigs])

    return trace(fn, make_inputs, sigs, sig.names, name=name)


def _unflatten_call(defs, kdefs, leaves: list):
    n = 0

    def take(d):
        nonlocal n
        count = _count(d)
        out = _unflatten_inputs(d, leaves[n : n + count])
        n += count
        return out

    args = tuple(take(d) for d in defs)
    kwargs = {k: take(d) for k, d in kdefs}
    return args, kwargs


def _count(d) -> int:
    if d[0] == "A":
        return 1
    if d[0] == "S":
        return 0
    return sum(_count(c) for c in (d[2] if d[0] == "dict" else d[1]))


# ------------------------------------------------------------ executors


def native_runner(module: ModuleOp, target: str, options=None) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    """Compile a straight-line module for `target` and return fn(arrays) -> arrays."""
    import dsc.runtime
    from dsc.driver import compile_module
    from dsc.pipeline import CompileOptions

    data = compile_module(module, target, options=options or CompileOptions())
    sess = dsc.runtime.load(data)
    names = [a.name for a in sess.get_inputs()]
    return lambda arrays: sess.run(None, dict(zip(names, arrays)))


@dataclass
class _Compiled:
    traced: Traced
    run: Callable[[list[np.ndarray]], list[np.ndarray]]
    kind: str  # "reference" | "native" | "hybrid"
    pieces: int = 1


def build_executor(traced: Traced, target: str, options=None) -> _Compiled:
    module = traced.module
    if target == "reference":
        from dsc.reference import run_module

        return _Compiled(traced, lambda arrays: run_module(module, arrays), "reference")
    if hybrid.has_if(module):
        p = hybrid.plan(module.clone())
        n = hybrid.compile_plan(p, lambda m: native_runner(m, target, options))
        return _Compiled(traced, lambda arrays: hybrid.run_plan(p, arrays), "hybrid", n)
    return _Compiled(traced, native_runner(module.clone(), target, options), "native")


# ------------------------------------------------------------ the decorator


class JitFunction:
    """A function compiled per input signature (see the module docstring)."""

    def __init__(self, fn: Callable, target: str = "host", cache_size: int = DEFAULT_CACHE_SIZE, options=None):
        from dsc.targets import get_target

        get_target(target)  # an unknown target fails at decoration
        if cache_size < 1:
            raise DscError(f"dsc.jit cache_size must be at least 1, got {cache_size}")
        functools.update_wrapper(self, fn, updated=())
        self.fn = fn
        self.target = target
        self.cache_size = cache_size
        self.options = options
        self._cache: OrderedDict[Any, _Compiled] = OrderedDict()
        self._lock = threading.RLock()
        self._hits = self._misses = self._compiles = 0

    @property
    def _name(self) -> str:
        return getattr(self.fn, "__qualname__", None) or repr(self.fn)

    def __get__(self, obj, objtype=None):
        return self if obj is None else types.MethodType(self, obj)

    def __repr__(self) -> str:
        return f"<dsc.jit {self._name} target={self.target!r}>"

    def __call__(self, *args, **kwargs):
        if current() is not None:  # called from traced code: inline into that trace
            return self.fn(*args, **kwargs)
        sig = signature_of(self.fn, args, kwargs)
        with self._lock:
            entry = self._cache.get(sig.key)
            if entry is not None and all(gd() for gd in entry.traced.guards):
                self._hits += 1
                self._cache.move_to_end(sig.key)
            else:
                self._misses += 1
                evicted = None
                if entry is None and len(self._cache) >= self.cache_size:
                    evicted, _ = self._cache.popitem(last=False)
                entry = self._compile_entry(sig)
                self._cache[sig.key] = entry
                if evicted is not None:
                    from dsc import DscWarning

                    warnings.warn(
                        DscWarning(
                            f"@dsc.jit {self._name}: compiling for a new input signature {sig.describe()}; the cache of {self.cache_size} signatures is full "
                            f"and dropped the least recently used one ({self._compiles} compiles so far). Inputs of ever-changing shapes recompile on every call: "
                            "pad or bucket them to a few shapes, or raise dsc.jit(cache_size=...)"
                        ),
                        stacklevel=2,
                    )
        outs = entry.run(sig.arrays)
        outs = [o if o.flags.writeable else o.copy() for o in (np.asarray(v) for v in outs)]
        return unflatten(entry.traced.treedef, outs)

    def _compile_entry(self, sig: _Signature) -> _Compiled:
        traced = trace_call(self.fn, sig, self._name)
        entry = build_executor(traced, self.target, self.options)
        self._compiles += 1
        return entry

    def lower(self, *args, **kwargs) -> ModuleOp:
        """The graph-dialect module traced for these inputs (not optimized)."""
        return trace_call(self.fn, signature_of(self.fn, args, kwargs), self._name).module

    def compile(self, *args, target: str | None = None, options=None, **kwargs) -> bytes:
        """One artifact (bytes, for dsc.runtime.load) for these inputs; graph.if is if-converted."""
        from dsc.driver import compile_module
        from dsc.pipeline import CompileOptions

        module = self.lower(*args, **kwargs)
        if hybrid.has_if(module):
            hybrid.if_to_select(module)
        return compile_module(module, target or self.target, options=options or self.options or CompileOptions())

    def cache_info(self) -> CacheInfo:
        return CacheInfo(self._hits, self._misses, self._compiles, len(self._cache), self.cache_size)

    def cache_clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._hits = self._misses = 0


def jit(fn: Callable | None = None, *, target: str = "host", cache_size: int = DEFAULT_CACHE_SIZE, options=None):
    """Compile a Python function of arrays by tracing (`@dsc.jit` or `@dsc.jit(target=...)`)."""
    if fn is None:
        return lambda f: JitFunction(f, target, cache_size, options)
    if not callable(fn):
        raise TraceError(f"dsc.jit expects a function, got {type(fn).__name__}", hint="use @dsc.jit or @dsc.jit(target=...)")
    return JitFunction(fn, target, cache_size, options)
