"""Running modules with `graph.if` on a native target, and if-conversion for deployment.

The CPU backend generates straight-line code: its fusion passes and code
generator expect only kernels at the top level of @main, and no kernel holds
a `graph.if`. Two ways around that, both on the module the tracer built:

* `plan(module)` splits @main at each `graph.if` into pieces of straight-line
  ops, each a module of its own that compiles natively; at run time
  `run_plan` runs the pieces in order and, at each `graph.if`, reads the
  computed predicate and runs only the pieces of the branch it selects
  (recursively for nested ifs). Values cross between pieces as NumPy arrays.
  Constants are cloned into every piece that uses them.
* `if_to_select(module)` turns every `graph.if` into straight-line code: the
  ops of both branches run, and `graph.where` on the (scalar) predicate picks
  each result. One artifact, at the price of computing both sides; exact,
  since the graph dialect's ops are pure (a NaN or inf in the side not taken
  is dropped by the select).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp, StringAttr
from xdsl.ir import Block, Operation, Region, SSAValue

from dsc.dialects import graph as g
from dsc.dialects.tensor_types import sig_of, tensor_type
from dsc.reference.evaluator import main_func

Runner = Callable[[list[np.ndarray]], list[np.ndarray]]


@dataclass
class Piece:
    """Straight-line ops of one block, as a module of their own: inputs in, outputs out."""

    module: ModuleOp
    inputs: list[SSAValue]
    outputs: list[SSAValue]
    runner: Runner | None = None


@dataclass
class IfStep:
    cond: SSAValue
    then: BlockPlan
    orelse: BlockPlan
    results: list[SSAValue]


@dataclass
class BlockPlan:
    steps: list[Piece | IfStep]
    returns: list[SSAValue]

    def pieces(self):
        for s in self.steps:
            if isinstance(s, Piece):
                yield s
            else:
                yield from s.then.pieces()
                yield from s.orelse.pieces()


@dataclass
class Plan:
    args: list[SSAValue]
    body: BlockPlan
    consts: dict[SSAValue, np.ndarray] = field(default_factory=dict)


def has_if(module: ModuleOp) -> bool:
    return any(isinstance(op, g.IfOp) for op in module.walk())


def _piece(ops: list[Operation]) -> Piece | None:
    inside = set(ops)
    inputs: list[SSAValue] = []
    for op in ops:
        for v in op.operands:
            if v.owner in inside or v in inputs or isinstance(v.owner, g.ConstantOp):
                continue
            inputs.append(v)
    outputs = [r for op in ops for r in op.results if any(u.operation not in inside for u in r.uses)]
    if not outputs:
        return None
    block = Block(arg_types=[v.type for v in inputs])
    mapping: dict[SSAValue, SSAValue] = dict(zip(inputs, block.args))
    for op in ops:
        for v in op.operands:
            if v not in mapping and isinstance(v.owner, g.ConstantOp):
                c = v.owner.clone()
                block.add_op(c)
                mapping[v] = c.result
        block.add_op(op.clone(value_mapper=mapping))
    block.add_op(func.ReturnOp(*[mapping[v] for v in outputs]))
    f = func.FuncOp("main", ([v.type for v in inputs], [v.type for v in outputs]), Region(block))
    f.arg_attrs = ArrayAttr([DictionaryAttr({"dsc.name": StringAttr(f"in{i}")}) for i in range(len(inputs))])
    f.res_attrs = ArrayAttr([DictionaryAttr({"dsc.name": StringAttr(f"out{i}")}) for i in range(len(outputs))])
    return Piece(ModuleOp([f]), inputs, outputs)


def _plan_block(block: Block, consts: dict[SSAValue, np.ndarray]) -> BlockPlan:
    steps: list[Piece | IfStep] = []
    run: list[Operation] = []

    def flush():
        if run:
            p = _piece(list(run))
            if p is not None:
                steps.append(p)
            run.clear()

    term = block.last_op
    for op in block.ops:
        if op is term:
            break
        if isinstance(op, g.ConstantOp):
            consts[op.result] = op.array
        elif isinstance(op, g.IfOp):
            flush()
            steps.append(IfStep(op.cond, _plan_block(op.then_region.block, consts), _plan_block(op.else_region.block, consts), list(op.results)))
        else:
            run.append(op)
    flush()
    return BlockPlan(steps, list(term.operands))


def plan(module: ModuleOp) -> Plan:
    """Split @main at its graph.if ops (see the module docstring)."""
    f = main_func(module)
    consts: dict[SSAValue, np.ndarray] = {}
    body = _plan_block(f.body.block, consts)
    return Plan(list(f.body.block.args), body, consts)


def compile_plan(p: Plan, make_runner: Callable[[ModuleOp], Runner]) -> int:
    """Compile every piece with `make_runner`; returns the number of pieces."""
    n = 0
    for piece in p.body.pieces():
        piece.runner = make_runner(piece.module)
        n += 1
    return n


def _run_block(bp: BlockPlan, env: dict[SSAValue, np.ndarray]) -> list[np.ndarray]:
    for step in bp.steps:
        if isinstance(step, Piece):
            outs = step.runner([env[v] for v in step.inputs])
            env.update(zip(step.outputs, outs))
        else:
            taken = step.then if bool(np.asarray(env[step.cond]).reshape(-1)[0]) else step.orelse
            env.update(zip(step.results, _run_block(taken, env)))
    return [env[v] for v in bp.returns]


def run_plan(p: Plan, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    env: dict[SSAValue, np.ndarray] = dict(p.consts)
    env.update(zip(p.args, inputs))
    return [np.asarray(v) for v in _run_block(p.body, env)]


# ------------------------------------------------------------ if-conversion


def if_to_select(module: ModuleOp) -> ModuleOp:
    """Replace every graph.if (innermost first) by both branches' ops and graph.where selects."""
    ifs = [op for op in module.walk() if isinstance(op, g.IfOp)]
    for ifop in reversed(ifs):
        parent = ifop.parent_block()
        cond = ifop.cond
        if sig_of(cond.type).shape != ():
            r = g.ReshapeOp.make([cond], result_types=[tensor_type((), np.bool_)])
            r.location = ifop.location
            parent.insert_op_before(r, ifop)
            cond = r.result
        branch_vals = []
        for region in (ifop.then_region, ifop.else_region):
            ops = list(region.block.ops)
            for op in ops[:-1]:
                op.detach()
                parent.insert_op_before(op, ifop)
            branch_vals.append(list(ops[-1].operands))
        for res, a, b in zip(ifop.results, *branch_vals):
            w = g.WhereOp.make([cond, a, b])
            w.location = ifop.location
            parent.insert_op_before(w, ifop)
            res.replace_all_uses_with(w.result)
        ifop.detach()
        ifop.erase()
    return module
