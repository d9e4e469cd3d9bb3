"""Exploring the runs of a traced function and merging them into graph IR with graph.if.

Data-dependent branches
-----------------------
`bool(t)` on a traced tensor is a *decision*. The function is run once per
path of decisions: a run follows the outcomes its path prescribes and stops
(`_Pending`, a BaseException so user `except Exception` blocks do not swallow
it) at the first decision past the path; the explorer then runs path+(True,)
and path+(False,). Tracing is deterministic, so two runs whose paths share a
prefix share their log up to that branch point: this is checked, and a
difference (randomness, state mutated between runs) is an error. The tree of
runs becomes IR: the common prefix, then a `graph.if` on the decision's
predicate whose two regions hold the rest of the function as traced under each
outcome, ending in `graph.yield` of the function's outputs. Nested decisions
nest `graph.if`s; depth and run count are bounded (a `while` on a tensor
predicate has no bound and is refused with the line of its test).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp, StringAttr
from xdsl.ir import Block, Region, SSAValue
from xdsl.utils.exceptions import VerifyException

from dsc.dialects import graph as g
from dsc.dialects.tensor_types import Sig, name_loc, tensor_type, type_str
from dsc.frontends.trace import tracer as T
from dsc.frontends.trace.tracer import (
    MAX_DEPTH,
    MAX_RUNS,
    Decision,
    Entry,
    Run,
    TraceError,
    Tracer,
    _Pending,
    flatten,
    trace_error,
)
from dsc.runtime.errors import DscError, ShapeError


def _same_treedef(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:  # static leaves that compare as arrays
        return repr(a) == repr(b)


# ------------------------------------------------------------ exploring runs


@dataclass
class Leaf:
    segment: list[Entry]
    out_ids: list[int]
    treedef: Any


@dataclass
class Branch:
    segment: list[Entry]
    decision: Decision
    then: Leaf | Branch
    orelse: Leaf | Branch


@dataclass
class Traced:
    module: ModuleOp
    treedef: Any
    input_names: list[str]
    output_names: list[str]
    guards: list[Callable[[], bool]]
    runs: int


def _describe(treedef) -> str:
    return repr(treedef).replace("('T',)", "tensor")


class _Explorer:
    def __init__(self, fn: Callable, make_inputs: Callable[[Tracer], tuple[tuple, dict]], name: str):
        self.fn = fn
        self.make_inputs = make_inputs
        self.name = name
        self.runs = 0
        self.guards: dict[int, Callable[[], bool]] = {}
        from dsc.frontends.trace import nn

        self.rng_state = nn.rng_state()

    def run(self, path: tuple[bool, ...]) -> Run:
        from dsc.frontends.trace import nn

        self.runs += 1
        if self.runs > MAX_RUNS:
            raise TraceError(f"tracing {self.name} took more than {MAX_RUNS} runs: too many data-dependent branches", hint="compute both sides and select with dsc.nn.functional.where instead of Python `if` on tensors")
        nn.set_rng_state(self.rng_state)  # modules built inside fn get the same weights in every run
        tr = Tracer(path, self.runs)
        prev = T.current()
        T._STATE.tracer = tr
        try:
            args, kwargs = self.make_inputs(tr)
            try:
                out = self.fn(*args, **kwargs)
            except _Pending:
                return Run(tr.log, tr.decisions, True)
        finally:
            T._STATE.tracer = prev
        leaves, treedef = flatten(out)
        for t in leaves:
            tr.check(t)
        if not leaves:
            raise TraceError(f"{self.name} returned no tensor ({_describe(treedef)})", hint="a @dsc.jit function must return a tensor, or a tuple/list/dict of them")
        self.guards.update(tr.guards)
        return Run(tr.log, tr.decisions, False, [t._id for t in leaves], treedef)

    def explore(self, path: tuple[bool, ...] = (), parent: Run | None = None) -> Leaf | Branch:
        run = self.run(path)
        start = run.decisions[len(path) - 1].pos if path else 0
        if parent is not None:
            same = len(run.log) >= start and all(a.same_as(b) for a, b in zip(run.log[:start], parent.log[:start]))
            same = same and [d.cond for d in run.decisions[: len(path)]] == [d.cond for d in parent.decisions[: len(path)]]
            if not same:
                d = parent.decisions[len(path) - 1]
                raise trace_error(
                    f"{self.name} traced differently when re-run for the other side of this branch: it has side effects or randomness outside dsc",
                    hint="dsc traces a function once per outcome of each tensor `if`; keep it free of global state, random numbers and I/O",
                    site=d.site,
                )
        if not run.pending:
            return Leaf(run.log[start:], run.out_ids, run.treedef)
        d = run.decisions[len(path)]
        if len(path) + 1 > MAX_DEPTH:
            raise trace_error(
                f"more than {MAX_DEPTH} nested data-dependent decisions: a Python loop whose condition depends on a tensor value cannot be traced",
                hint="loop over a fixed range (it unrolls), or select with dsc.nn.functional.where",
                site=d.site,
            )
        then = self.explore(path + (True,), run)
        orelse = self.explore(path + (False,), run)
        return Branch(run.log[start : d.pos], d, then, orelse)


def _emit_entry(e: Entry, block: Block, env: dict[int, SSAValue]) -> None:
    if e.op is g.ConstantOp:
        op = g.ConstantOp.from_array(e.const, e.key)
    else:
        try:
            op = e.op.make([env[i] for i in e.operands], result_types=[tensor_type(s.shape, s.dtype) for s in e.results], **e.attrs)
        except VerifyException as err:  # shape inference already passed while tracing: a dsc bug
            raise DscError(f"building {e.op.name} at {e.loc} failed: {err}") from None
    op.location = name_loc(e.loc)
    block.add_op(op)
    for i, r in zip(e.ids, op.results):
        env[i] = r


def _build(node: Leaf | Branch, block: Block, env: dict[int, SSAValue], name: str) -> tuple[list[SSAValue], Any]:
    for e in node.segment:
        _emit_entry(e, block, env)
    if isinstance(node, Leaf):
        return [env[i] for i in node.out_ids], node.treedef
    blocks, outs, trees = [], [], []
    for sub in (node.then, node.orelse):
        b = Block()
        vals, tree = _build(sub, b, dict(env), name)
        b.add_op(g.YieldOp(*vals))
        blocks.append(b)
        outs.append(vals)
        trees.append(tree)
    d = node.decision
    if not _same_treedef(trees[0], trees[1]):
        raise trace_error(f"the two sides of this `if` make {name} return different structures: {_describe(trees[0])} when true, {_describe(trees[1])} when false", site=d.site)
    for n, (a, b) in enumerate(zip(outs[0], outs[1])):
        if a.type != b.type:
            raise trace_error(
                f"output {n} of {name} is {type_str(a.type)} when this condition holds and {type_str(b.type)} when it does not; graph.if needs both sides to agree",
                hint="make both branches return the same shapes and dtypes",
                cls=ShapeError,
                site=d.site,
            )
    ifop = g.IfOp(env[d.cond], [v.type for v in outs[0]], Region(blocks[0]), Region(blocks[1]))
    ifop.location = name_loc(d.site.short if d.site else "if")
    block.add_op(ifop)
    return list(ifop.results), trees[0]


def trace(
    fn: Callable,
    make_inputs: Callable[[Tracer], tuple[tuple, dict]],
    input_sigs: Sequence[Sig],
    input_names: Sequence[str],
    *,
    name: str | None = None,
    output_names: Sequence[str] | None = None,
) -> Traced:
    """Trace `fn` into a graph-dialect module with a func.func @main.

    `make_inputs(tracer)` returns the call's (args, kwargs), creating one
    `tracer.arg(sig)` per entry of `input_sigs`, in order.
    """
    name = name or getattr(fn, "__qualname__", None) or repr(fn)
    explorer = _Explorer(fn, make_inputs, name)
    tree = explorer.explore()
    block = Block(arg_types=[tensor_type(s.shape, s.dtype) for s in input_sigs])
    env = dict(enumerate(block.args))
    outs, treedef = _build(tree, block, env, name)
    # a function may return one tensor twice; give each output its own name
    block.add_op(func.ReturnOp(*outs))
    f = func.FuncOp("main", ([a.type for a in block.args], [v.type for v in outs]), Region(block))
    names = list(output_names) if output_names is not None else [f"output{i}" if len(outs) > 1 else "output" for i in range(len(outs))]
    f.arg_attrs = ArrayAttr([DictionaryAttr({"dsc.name": StringAttr(n)}) for n in input_names])
    f.res_attrs = ArrayAttr([DictionaryAttr({"dsc.name": StringAttr(n)}) for n in names])
    module = ModuleOp([f])
    try:
        module.verify()
    except VerifyException as e:
        raise DscError(f"the traced IR of {name} does not verify: {e}", hint="this is a dsc bug; please report it with the function") from None
    return Traced(module, treedef, list(input_names), names, list(explorer.guards.values()), explorer.runs)
