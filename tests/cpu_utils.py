"""Test helpers for the CPU backend: compile graph IR natively without the full pipeline.

`run_native(module, inputs, fuse=...)` wraps ops into kernel.fused regions
(each op alone, or all elementwise ops of the module in one kernel), gives
every kernel result its own arena slot (no reuse), generates code for the
host and runs it with `threads` threads. Tests compare the result with the
reference evaluator on the same module.
"""

from __future__ import annotations

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import DenseArrayBase, DictionaryAttr, IntegerAttr, ModuleOp, i64
from xdsl.ir import Block, Region

from dsc.backends.cpu.codegen import generate
from dsc.backends.cpu.target import host_target
from dsc.dialects import graph as g
from dsc.dialects import kernel as k
from dsc.dialects.tensor_types import sig_of
from dsc.reference import run_module
from dsc.runtime.native import NativeModule


def outline_each(module: ModuleOp, group=None) -> ModuleOp:
    """Wrap each top-level compute op of @main (or each list of ops from `group`) in a kernel."""
    f = next(op for op in module.ops if isinstance(op, func.FuncOp))
    block = f.body.block
    ops = [op for op in block.ops if not isinstance(op, g.ConstantOp | func.ReturnOp | g.ReshapeOp)]
    groups = group(ops) if group else [[op] for op in ops]
    for n, grp in enumerate(groups):
        inside = set(grp)
        ins = []
        for op in grp:
            for v in op.operands:
                if v.owner not in inside and v not in ins:
                    ins.append(v)
        outs = [r for op in grp for r in op.results if any(u.operation not in inside for u in r.uses)]
        kb = Block(arg_types=[v.type for v in ins])
        mapping = dict(zip(ins, kb.args))
        for op in grp:
            c = op.clone(value_mapper=mapping)
            kb.add_op(c)
        kb.add_op(k.YieldOp(*[mapping[r] for r in outs]))
        kop = k.FusedOp(ins, [r.type for r in outs], Region(kb), f"k{n}", "test", [op.name for op in grp], "cpu")
        block.insert_op_before(kop, grp[0])
        for r, nr in zip(outs, kop.outputs):
            r.replace_uses_with_if(nr, lambda use: use.operation not in inside)
        for op in reversed(grp):
            op.detach()
            op.erase()
    # every kernel result gets its own arena slot (returned ones live in the outputs)
    returned = set()
    for v in block.last_op.operands:
        while isinstance(v.owner, g.ReshapeOp):
            v = v.owner.input
        returned.add(v)
    off = 0
    for op in block.ops:
        if isinstance(op, k.FusedOp):
            offs = []
            for r in op.outputs:
                if r in returned:
                    offs.append(-1)
                else:
                    offs.append(off)
                    s = sig_of(r.type)
                    off += (int(np.prod(s.shape)) * s.dtype.itemsize + 63) // 64 * 64
            op.attributes["offsets"] = DenseArrayBase.from_list(i64, offs)
    f.attributes["dsc.arena"] = DictionaryAttr({"cpu": IntegerAttr(off, i64)})
    module.verify()
    return module


def run_native(module: ModuleOp, inputs: list[np.ndarray], threads: int = 2, group=None) -> list[np.ndarray]:
    module = outline_each(module.clone(), group)
    prog = generate(module, host_target())
    native = NativeModule(prog.object_code, threads)
    outs = [np.empty(o.shape, o.dtype) for o in prog.outputs]
    weights = np.frombuffer(prog.weights, np.uint8).copy() if prog.weights else np.zeros(64, np.uint8)
    arena = np.zeros(max(prog.arena_bytes, 64), np.uint8)
    ins = [np.ascontiguousarray(x, dtype=r.dtype) for x, r in zip(inputs, prog.inputs)]
    native.run(ins, outs, weights, arena)
    for j, src in enumerate(prog.output_sources):
        if src is not None:
            raise NotImplementedError("outputs that alias inputs/weights are copied by the runtime")
    return outs


def check_native(module: ModuleOp, inputs: list[np.ndarray], rtol=1e-5, atol=1e-5, **kw) -> None:
    want = run_module(module, inputs)
    got = run_native(module, inputs, **kw)
    for w, gt in zip(want, got):
        np.testing.assert_allclose(gt, w, rtol=rtol, atol=atol)


def mcjit_object(obj: bytes):
    """An MCJIT engine holding object code `obj` (compiled for this machine); keep it alive while calling
    the addresses `engine.get_function_address(name)` gives."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    tm = llvm.Target.from_default_triple().create_target_machine(reloc="pic", codemodel="default")
    empty = llvm.parse_assembly("")
    empty.triple = llvm.get_process_triple()
    engine = llvm.create_mcjit_compiler(empty, tm)
    engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    return engine

