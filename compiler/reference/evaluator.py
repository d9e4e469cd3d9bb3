"""The reference evaluator: runs graph-dialect IR with NumPy.

It is the oracle of dsc: every pass must leave `run_module` results unchanged
(on random inputs), and it backs the `reference` target and the ONNX backend.
Kernels are registered per op class in `dsc.reference.kernels` with
`@kernel(OpClass)`; an op without one raises a `DscError` naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, SSAValue

from dsc.dialects import graph as g
from dsc.dialects import kernel as k
from dsc.dialects.tensor_types import loc_name, sig_of, type_str
from dsc.runtime.errors import DscError, ShapeError

Kernel = Callable[..., np.ndarray | Sequence[np.ndarray]]
KERNELS: dict[type[Operation], Kernel] = {}


def kernel(*op_types: type[Operation]):
    """Register a NumPy kernel: fn(op, *operand_arrays, **python_attrs)."""

    def register(fn: Kernel) -> Kernel:
        for t in op_types:
            KERNELS[t] = fn
        return fn

    return register


def evaluate_op(op: Operation, args: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run one op on NumPy arrays; results are cast to the op's result types."""
    fn = KERNELS.get(type(op))
    if fn is None:
        raise DscError(f"the reference evaluator has no kernel for {op.name}", hint="add one in compiler/reference/kernels*.py")
    attrs = op.py_attrs() if isinstance(op, g.GraphOp) else {}
    out = fn(op, *args, **attrs)
    outs = list(out) if isinstance(out, list | tuple) else [out]
    results = []
    for r, v in zip(op.results, outs, strict=True):
        s = sig_of(r.type)
        v = np.asarray(v)
        if v.dtype != s.dtype:
            v = v.astype(s.dtype)
        if v.shape != s.shape:
            raise DscError(f"reference kernel of {op.name} produced shape {v.shape}, the IR says {type_str(r.type)}")
        results.append(v)
    return results


def run_block(block: Block, env: dict[SSAValue, np.ndarray]) -> list[np.ndarray]:
    """Evaluate a block's ops in order; returns the terminator's operands."""
    for op in block.ops:
        if isinstance(op, func.ReturnOp | g.YieldOp | k.YieldOp):
            return [env[v] for v in op.operands]
        if isinstance(op, g.ConstantOp):
            env[op.result] = op.array
            continue
        args = [env[v] for v in op.operands]
        if isinstance(op, g.IfOp):
            region = op.then_region if bool(np.asarray(args[0]).reshape(-1)[0]) else op.else_region
            outs = run_block(region.block, env)
        elif isinstance(op, k.FusedOp):
            outs = run_block(op.body.block, dict(zip(op.body.block.args, args)))
        elif isinstance(op, k.TransferOp):
            outs = args
        else:
            try:
                outs = evaluate_op(op, args)
            except DscError:
                raise
            except Exception as e:  # a kernel bug or bad data: say which op
                where = loc_name(op) or op.name
                raise DscError(f"reference evaluation of {op.name} ({where}) failed: {type(e).__name__}: {e}") from e
        for r, v in zip(op.results, outs, strict=True):
            env[r] = v
    raise DscError("block has no terminator")


def main_func(module: ModuleOp) -> func.FuncOp:
    for op in module.ops:
        if isinstance(op, func.FuncOp) and op.sym_name.data == "main":
            return op
    raise DscError("the module has no func.func @main", hint="the entry point of a dsc module is @main")


def run_module(module: ModuleOp, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Evaluate @main on inputs (positional, or by argument name)."""
    from dsc.reference import kernels as _  # noqa: F401  (registers the kernels)

    f = main_func(module)
    args = f.body.block.args
    if isinstance(inputs, Mapping):
        names = arg_names(f)
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ShapeError(f"missing inputs {missing}; the model takes {names}")
        inputs = [inputs[n] for n in names]
    if len(inputs) != len(args):
        raise ShapeError(f"@main takes {len(args)} inputs, got {len(inputs)}")
    env: dict[SSAValue, np.ndarray] = {}
    for a, v in zip(args, inputs):
        s = sig_of(a.type)
        v = np.asarray(v)
        if v.shape != s.shape:
            raise ShapeError(f"input {len(env)} has shape {list(v.shape)}, the model expects {list(s.shape)}")
        env[a] = v.astype(s.dtype, copy=False)
    return run_block(f.body.block, env)


def arg_names(f: func.FuncOp) -> list[str]:
    """Input names of @main (from arg_attrs {dsc.name = ...}), else arg0, arg1..."""
    names = []
    attrs = f.arg_attrs.data if f.arg_attrs is not None else ()
    for i in range(len(f.body.block.args)):
        name = None
        if i < len(attrs) and "dsc.name" in attrs[i].data:
            name = attrs[i].data["dsc.name"].data
        names.append(name or f"arg{i}")
    return names


def result_names(f: func.FuncOp) -> list[str]:
    names = []
    attrs = f.res_attrs.data if f.res_attrs is not None else ()
    for i in range(len(f.function_type.outputs.data)):
        name = None
        if i < len(attrs) and "dsc.name" in attrs[i].data:
            name = attrs[i].data["dsc.name"].data
        names.append(name or f"result{i}")
    return names
