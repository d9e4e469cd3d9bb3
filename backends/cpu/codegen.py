"""Kernel IR → one native object: the CPU backend's driver.

Input: fused, memory-planned IR (`kernel.fused` with `offsets`, see
dialects/kernel.py). Output: a `NativeProgram` — object code exposing

    void dsc_run(i8** inputs, i8** outputs, i8* weights, i8* arena,
                 i64 tid, i64 nthreads, i64* barrier)

which every runtime thread calls once per inference, and

    void dsc_run_single(i8** inputs, i8** outputs, i8* weights, i8* arena)

= dsc_run on one thread (tid 0, nthreads 1, its own barrier): the entry C
and C++ programs call to embed a model without Python (see the README).
`dsc_run` is a list of steps: each step is a function `void sN(T*
operands..., T* results..., i64 tid, i64 nthreads)` that does its share of
the work, followed by a barrier. A kernel becomes one step when a fused emitter matches it (its
intermediates stay in registers), else one step per op with intermediates
in a scratch area after the planned arena.

A model with less work than SINGLE_THREAD_FLOPS runs every inference on the
calling thread (dsc_dispatch leaves the workers asleep): waking one costs more
than its share saves.

Weights are laid out 64-byte aligned in one blob; an emitter may repack a
constant operand into the layout its micro-kernel wants (`StepCtx.repack`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue

from dsc.backends.cpu.irb import I8P, I64, VOID, KernelBuilder, const_i64
from dsc.backends.cpu.workers import emit_barrier, emit_workers
from dsc.backends.cpu.target import CpuTarget
from dsc.dialects import graph as g
from dsc.dialects import kernel as k
from dsc.dialects.tensor_types import sig_of, type_str
from dsc.passes.place_devices import kernel_cost
from dsc.runtime.errors import DscError

ALIGN = 64
# a model with less work runs on the calling thread alone: waking a worker (~40 us on a VM
# after it went to sleep) costs more than its share saves (the 784-512-512-10 MLP at batch 1)
SINGLE_THREAD_FLOPS = 4e6

_LLVM_TYPES = {
    np.dtype(np.float32): ir.FloatType(),
    np.dtype(np.float64): ir.DoubleType(),
    np.dtype(np.float16): ir.HalfType(),  # computed in float32: emitters widen on load (see float16.py)
    np.dtype(np.int64): ir.IntType(64),
    np.dtype(np.int32): ir.IntType(32),
    np.dtype(np.int16): ir.IntType(16),
    np.dtype(np.int8): ir.IntType(8),
    np.dtype(np.uint64): ir.IntType(64),
    np.dtype(np.uint32): ir.IntType(32),
    np.dtype(np.uint16): ir.IntType(16),
    np.dtype(np.uint8): ir.IntType(8),
    np.dtype(np.bool_): ir.IntType(8),  # bool tensors are bytes in memory
}


def llvm_type(dtype) -> ir.Type:
    dt = np.dtype(dtype)
    if dt not in _LLVM_TYPES:
        raise DscError(f"the CPU backend has no code for {dt} tensors", hint="compile in float32 (--precision fp32) for CPU targets")
    return _LLVM_TYPES[dt]


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True)
class BufRef:
    """Where a tensor lives at run time."""

    kind: str  # "input" | "output" | "weight" | "arena"
    index: int  # input/output position, or byte offset into weights/arena
    dtype: np.dtype
    shape: tuple[int, ...]


@dataclass
class Step:
    name: str
    args: list[BufRef]
    label: str  # for profiles and dumps: kernel name / op


@dataclass
class NativeProgram:
    object_code: bytes
    weights: bytes
    arena_bytes: int
    inputs: list[BufRef]
    outputs: list[BufRef]
    output_sources: list[BufRef | None]  # None: written by dsc_run; else copy from this buffer
    steps: list[Step]
    llvm_ir: str = ""
    profile_offset: int | None = None  # arena byte offset of per-step timestamps (profiling builds)
    single_thread: bool = False  # every inference runs on the calling thread (tiny models)


class WeightBlob:
    def __init__(self):
        self.parts: list[tuple[int, bytes]] = []  # (offset, padded bytes)
        self.size = 0
        self._by_key: dict[str, int] = {}

    def add(self, array: np.ndarray, key: str | None = None) -> int:
        if key is not None and key in self._by_key:
            return self._by_key[key]
        off = self.size
        data = np.ascontiguousarray(array).tobytes()
        self.parts.append((off, data + b"\0" * (_align(len(data)) - len(data))))
        self.size += _align(len(data))
        if key is not None:
            self._by_key[key] = off
        return off

    def compact(self, used: set[int]) -> dict[int, int]:
        """Drop the parts no step reads (e.g. weights an emitter repacked); returns old -> new offsets."""
        moved, parts, size = {}, [], 0
        for off, data in self.parts:
            if off in used:
                moved[off] = size
                parts.append((size, data))
                size += len(data)
        self.parts, self.size, self._by_key = parts, size, {}
        return moved

    def bytes(self) -> bytes:
        return b"".join(data for _, data in self.parts)


@dataclass
class StepCtx:
    """What an emitter may ask of the driver while emitting a step."""

    target: CpuTarget
    weights: WeightBlob
    args: list[BufRef]
    consts: list[np.ndarray | None]  # constant data behind each arg (None if not a constant)

    def repack(self, i: int, array: np.ndarray, key: str) -> None:
        """Replace constant arg i by `array` (e.g. weights in a blocked layout)."""
        off = self.weights.add(array, key)
        self.args[i] = BufRef("weight", off, array.dtype, tuple(array.shape))
        self.consts[i] = array


OpEmitter = Callable[[KernelBuilder, Operation, list, list, object, object, StepCtx], None]
# graph op class -> emitter of that op alone: fn(kb, op, in_ptrs, out_ptrs, tid, nthreads, ctx)
OP_EMITTERS: dict[type[Operation], OpEmitter] = {}
# fused emitters, tried in order: (name, matches(kernel) -> bool, emit(kb, kernel, in_ptrs, out_ptrs, tid, nthreads, ctx))
FUSED_EMITTERS: list[tuple[str, Callable, Callable]] = []


def op_emitter(*op_types):
    def register(fn):
        for t in op_types:
            OP_EMITTERS[t] = fn
        return fn

    return register


def fused_emitter(name: str, matches: Callable):
    def register(fn):
        FUSED_EMITTERS.append((name, matches, fn))
        return fn

    return register


def _load_emitters() -> None:
    from dsc.backends.cpu import emit_elementwise  # noqa: F401

    for mod in ("emit_data", "emit_reduce", "emit_winograd", "emit_conv", "emit_gemm", "emit_pool"):
        try:
            __import__(f"dsc.backends.cpu.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"dsc.backends.cpu.{mod}":
                raise


class Codegen:
    def __init__(self, module: ModuleOp, target: CpuTarget, profile: bool = False):
        _load_emitters()
        self.target = target
        # profiling: thread 0 stores the cycle counter after each step's barrier (x86 only:
        # AArch64's cycle counter traps in user space)
        self.profile = profile and target.arch.startswith("x86")
        self.fn = _main(module)
        self.llmod = ir.Module(name="dsc")
        self.llmod.triple = target.triple
        self.weights = WeightBlob()
        self.refs: dict[SSAValue, BufRef] = {}
        self.consts: dict[SSAValue, np.ndarray] = {}
        self.steps: list[Step] = []
        arena = self.fn.attributes.get("dsc.arena")
        self.arena_bytes = int(arena.data["cpu"].value.data) if arena is not None and "cpu" in arena.data else 0
        self.scratch_bytes = 0
        self.profile_offset: int | None = None
        self._fn_cache: dict[str, str] = {}
        self.single_thread = False  # dsc_dispatch keeps the workers asleep (tiny models)

    # ----------------------------------------------------------- buffers
    PRODUCERS: tuple = (k.FusedOp,)  # top-level ops whose results get buffers (and may be graph outputs)

    def _const_ref(self, op: g.ConstantOp):
        """Where a top-level constant lives at run time (the weights blob)."""
        s = sig_of(op.result.type)
        return BufRef("weight", self.weights.add(op.array, op.blob.key), s.dtype, s.shape)

    def _result_refs(self, op, root_out: dict) -> None:
        """Buffers of a producer's results: a graph output, or the arena at plan-memory's offsets."""
        offs = op.offsets.get_values() if op.offsets is not None else None
        for n, r in enumerate(op.results):
            s = sig_of(r.type)
            if r in root_out:
                self.refs[r] = BufRef("output", root_out[r], s.dtype, s.shape)
            else:
                if offs is None or offs[n] < 0:
                    raise DscError(f"{op.name} result {n} has no arena offset", hint="run plan-memory before code generation")
                self.refs[r] = BufRef("arena", int(offs[n]), s.dtype, s.shape)

    def _assign_buffers(self) -> tuple[list[BufRef], list[BufRef], list[BufRef | None]]:
        block = self.fn.body.block
        inputs = []
        for i, a in enumerate(block.args):
            s = sig_of(a.type)
            self.refs[a] = BufRef("input", i, s.dtype, s.shape)
            inputs.append(self.refs[a])
        ret = block.last_op
        assert isinstance(ret, func.ReturnOp)
        root_out: dict[SSAValue, int] = {}
        for j, v in enumerate(ret.operands):
            r = _root(v)
            if isinstance(r.owner, self.PRODUCERS) and r not in root_out:
                root_out[r] = j
        for op in block.ops:
            if isinstance(op, g.ConstantOp):
                self.consts[op.result] = op.array
                self.refs[op.result] = self._const_ref(op)
            elif isinstance(op, g.ReshapeOp):
                src = self.refs[op.input]
                s = sig_of(op.result.type)
                self.refs[op.result] = BufRef(src.kind, src.index, s.dtype, s.shape)
                if op.input in self.consts:
                    self.consts[op.result] = self.consts[op.input].reshape(s.shape)
            elif isinstance(op, self.PRODUCERS):
                self._result_refs(op, root_out)
            elif isinstance(op, func.ReturnOp):
                pass
            else:
                raise DscError(f"code generation cannot handle a top-level {op.name}", hint="run the fusion passes (outline-kernels) before code generation")
        outputs, sources = [], []
        for j, v in enumerate(ret.operands):
            s = sig_of(v.type)
            outputs.append(BufRef("output", j, s.dtype, s.shape))
            ref = self.refs[v]
            sources.append(None if ref.kind == "output" and ref.index == j else ref)
        return inputs, outputs, sources

    # ------------------------------------------------------------- steps
    def _new_step(self, label: str, args: list[BufRef], consts: list, emit) -> None:
        name = f"s{len(self.steps)}"
        ctx = StepCtx(self.target, self.weights, list(args), list(consts))
        # the emitter may repack weights (changing arg types), so build the body first in a scratch fn
        fn_args = [llvm_type(a.dtype).as_pointer() for a in args] + [I64, I64]
        fn = ir.Function(self.llmod, ir.FunctionType(VOID, fn_args), name)
        fn.linkage = "internal"
        # noalias lets LLVM vectorize freely; an in-place step (plan-memory reused an input's
        # buffer for the output) must not claim it for the two aliasing pointers
        where = [(a.kind, a.index) for a in args]
        for a, w in zip(fn.args[: len(args)], where):
            if where.count(w) == 1:
                a.add_attribute("noalias")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        kb = KernelBuilder(b, self.llmod)
        emit(kb, list(fn.args[: len(args)]), fn.args[-2], fn.args[-1], ctx)
        kb.b.ret_void()
        if [a.dtype for a in ctx.args] != [a.dtype for a in args]:
            raise DscError(f"emitter of {label} changed an argument's dtype")
        # identical steps (same ops, shapes and attributes: e.g. the repeated blocks of a
        # ResNet stage) share one function, which divides LLVM's optimization time
        key = str(fn).replace(f'@"{name}"', "@STEP", 1)
        shared = self._fn_cache.get(key)
        if shared is not None:
            del self.llmod.globals[name]
            name = shared
        else:
            self._fn_cache[key] = name
        self.steps.append(Step(name, ctx.args, label))

    def _emit_kernel(self, kop: k.FusedOp) -> None:
        ins = [self.refs[v] for v in kop.inputs]
        outs = [self.refs[r] for r in kop.outputs]
        consts = [self.consts.get(v) for v in kop.inputs] + [None] * len(outs)
        name = kop.sym_name.data
        for ename, matches, emit in FUSED_EMITTERS:
            if matches(kop):
                n_in = len(ins)

                def run(kb, ptrs, tid, nt, ctx, emit=emit, n_in=n_in):
                    emit(kb, kop, ptrs[:n_in], ptrs[n_in:], tid, nt, ctx)

                self._new_step(f"{name} ({ename})", ins + outs, consts, run)
                return
        # op by op, intermediates in scratch
        body = kop.body.block
        local: dict[SSAValue, BufRef] = dict(zip(body.args, ins))
        local_consts = dict(zip(body.args, consts[: len(ins)]))
        yielded = {v: outs[i] for i, v in enumerate(body.last_op.operands)}
        scratch = self.arena_bytes
        for op in body.ops:
            if isinstance(op, k.YieldOp):
                break
            if isinstance(op, g.ConstantOp):
                s = sig_of(op.result.type)
                local[op.result] = BufRef("weight", self.weights.add(op.array, op.blob.key), s.dtype, s.shape)
                local_consts[op.result] = op.array
                continue
            res = op.results[0]
            s = sig_of(res.type)
            if res in yielded:
                local[res] = yielded[res]
            else:
                local[res] = BufRef("arena", scratch, s.dtype, s.shape)
                scratch += _align(max(int(np.prod(s.shape)) * s.dtype.itemsize, 1))
            emitter = OP_EMITTERS.get(type(op))
            if emitter is None:
                raise DscError(f"the CPU backend has no code generator for {op.name} (in kernel @{name})", hint="use --target reference, or file an issue")
            args = [local[v] for v in op.operands] + [local[res]]
            cs = [local_consts.get(v) for v in op.operands] + [None]
            n_in = len(op.operands)

            def run(kb, ptrs, tid, nt, ctx, op=op, emitter=emitter, n_in=n_in):
                emitter(kb, op, ptrs[:n_in], ptrs[n_in:], tid, nt, ctx)

            self._new_step(f"{name}: {op.name}", args, cs, run)
        # a yielded value that is a kernel input or appears twice needs a copy step
        for v, ref in yielded.items():
            if local.get(v) is not ref and v in local:
                self._copy_step(f"{name}: copy", local[v], ref)
        self.scratch_bytes = max(self.scratch_bytes, scratch - self.arena_bytes)

    def _copy_step(self, label: str, src: BufRef, dst: BufRef) -> None:
        from dsc.backends.cpu.emit_elementwise import emit_copy

        self._new_step(label, [src, dst], [None, None], lambda kb, p, tid, nt, ctx: emit_copy(kb, p[0], p[1], int(np.prod(src.shape)), tid, nt))

    # ------------------------------------------------------------- entry
    def _emit_entry(self) -> None:
        barrier = emit_barrier(self.llmod, self.target.arch)
        i8pp = I8P.as_pointer()
        fn = ir.Function(self.llmod, ir.FunctionType(VOID, [i8pp, i8pp, I8P, I8P, I64, I64, I64.as_pointer()]), "dsc_run")
        inputs, outputs, weights, arena, tid, nthreads, bar = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        stamps = None
        if self.profile:
            stamps = b.bitcast(b.gep(arena, [const_i64(self.profile_offset)], inbounds=True), I64.as_pointer())
            self._stamp(b, stamps, tid, 0)
        for n, step in enumerate(self.steps):
            ptrs = []
            for ref in step.args:
                if ref.kind in ("input", "output"):
                    base = b.load(b.gep(inputs if ref.kind == "input" else outputs, [const_i64(ref.index)], inbounds=True))
                else:
                    base = b.gep(weights if ref.kind == "weight" else arena, [const_i64(ref.index)], inbounds=True)
                ptrs.append(b.bitcast(base, llvm_type(ref.dtype).as_pointer()))
            b.call(self.llmod.globals[step.name], ptrs + [tid, nthreads])
            if n + 1 < len(self.steps) or stamps is not None:
                b.call(barrier, [bar, nthreads])
            if stamps is not None:
                self._stamp(b, stamps, tid, n + 1)
        b.ret_void()
        emit_workers(self.llmod, fn, self.target.arch, single=self.single_thread)
        # the C-friendly entry for embedding without the Python runtime: one thread, own barrier
        single = ir.Function(self.llmod, ir.FunctionType(VOID, [i8pp, i8pp, I8P, I8P]), "dsc_run_single")
        sb = ir.IRBuilder(single.append_basic_block("entry"))
        state = sb.alloca(ir.ArrayType(I64, 8), name="barrier")
        sb.store(ir.Constant(ir.ArrayType(I64, 8), [0] * 8), state)
        sb.call(fn, [*single.args, const_i64(0), const_i64(1), sb.gep(state, [const_i64(0), ir.Constant(ir.IntType(32), 0)], inbounds=True)])
        sb.ret_void()

    def _compact_weights(self, sources: list[BufRef | None]) -> list[BufRef | None]:
        """Keep only the weights some step or output reads, and renumber their offsets."""
        used = {r.index for st in self.steps for r in st.args if r.kind == "weight"}
        used |= {r.index for r in sources if r is not None and r.kind == "weight"}
        moved = self.weights.compact(used)

        def fix(r: BufRef | None) -> BufRef | None:
            return BufRef(r.kind, moved[r.index], r.dtype, r.shape) if r is not None and r.kind == "weight" else r

        for st in self.steps:
            st.args = [fix(r) for r in st.args]
        return [fix(r) for r in sources]

    def _stamp(self, b: ir.IRBuilder, stamps, tid, index: int) -> None:
        with b.if_then(b.icmp_signed("==", tid, const_i64(0))):
            cyc = b.call(self.llmod.declare_intrinsic("llvm.readcyclecounter", (), ir.FunctionType(I64, [])), [])
            b.store(cyc, b.gep(stamps, [const_i64(index)], inbounds=True))

    def run(self) -> NativeProgram:
        inputs, outputs, sources = self._assign_buffers()
        for op in self.fn.body.block.ops:
            if isinstance(op, k.FusedOp):
                self._emit_kernel(op)
        sources = self._compact_weights(sources)
        flops = sum(kernel_cost(op)[0] for op in self.fn.body.block.ops if isinstance(op, k.FusedOp))
        self.single_thread = flops < SINGLE_THREAD_FLOPS
        arena = _align(self.arena_bytes + self.scratch_bytes)
        if self.profile:
            self.profile_offset = arena
            arena += _align(8 * (len(self.steps) + 1))
        self._emit_entry()
        text = str(self.llmod)
        obj = compile_llvm_ir(text, self.target)
        prog = NativeProgram(obj, self.weights.bytes(), arena, inputs, outputs, sources, self.steps, text)
        prog.profile_offset = self.profile_offset
        prog.single_thread = self.single_thread
        return prog


def compile_llvm_ir(text: str, target: CpuTarget) -> bytes:
    """Verify, optimize (O3) and assemble LLVM IR text to an object file for `target`."""
    from dsc.backends.cpu.float16 import float16_support_ir, uses_half
    from dsc.backends.cpu.target import init_llvm

    init_llvm()
    mod = llvm.parse_assembly(text)
    mod.triple = target.triple
    if uses_half(text):
        # the half <-> float conversions LLVM may lower to compiler-rt calls, defined in the object
        support = llvm.parse_assembly(float16_support_ir())
        support.triple = target.triple
        mod.link_in(support)
    mod.verify()
    tm = target.target_machine()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return tm.emit_object(mod)


def _main(module: ModuleOp) -> func.FuncOp:
    for op in module.ops:
        if isinstance(op, func.FuncOp) and op.sym_name.data == "main":
            return op
    raise DscError("the module has no func.func @main")


def _root(v: SSAValue) -> SSAValue:
    while isinstance(v.owner, g.ReshapeOp):
        v = v.owner.input
    return v


def generate(module: ModuleOp, target: CpuTarget, profile: bool = False) -> NativeProgram:
    """Compile fused, planned kernel IR to a NativeProgram for a CPU target (optionally with step timestamps)."""
    return Codegen(module, target, profile).run()


__all__ = ["BufRef", "NativeProgram", "StepCtx", "generate", "op_emitter", "fused_emitter", "llvm_type", "type_str"]
