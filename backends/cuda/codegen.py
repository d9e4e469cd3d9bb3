"""Kernel IR placed on CPU and GPU -> host object code + PTX + an execution plan.

Input: fused, placed, memory-planned IR (kernels with `device` "cpu" or
"cuda:0", `kernel.transfer` between them, `offsets`, and
`dsc.arena = {cpu = N, "cuda:0" = M}` on @main).

Output: a `HeteroProgram`:

* the CPU kernels as a `NativeProgram` (the CPU backend's driver, see
  dsc/backends/cpu/codegen.py), whose object code exposes, besides
  `dsc_run`, one entry per *segment* — a maximal run of CPU kernels between
  GPU work — `dsc_seg<i>(inputs, outputs, weights, arena, tid, nthreads,
  barrier)`, with the same threading contract as `dsc_run`;
* the GPU kernels: one llvmlite module of `ptx_kernel` functions, compiled
  by LLVM's NVPTX back end to PTX for the target's SM (see target.py);
* the schedule, in program order: `cpu` (run a segment), `copy` (a
  transfer: host <-> device), `launch` (kernel, grid, block, arguments).

Buffers (`BufRef.kind`): "input"/"output" (the caller's, host), "arena" (the
host arena), "gpu" (the device arena: plan-memory's "cuda:0" offsets, then
scratch for intermediates of kernels the emitters split), "weight" (the one
weights blob; the runtime uploads it once, so a launch's "weight" is the
device copy and a CPU step's the host one).

GPU kernels (emitters in conv.py, depthwise.py, gemm.py, mma_pipe.py, rows.py, data.py): a fused group is
matched whole — convolution or GEMM with its epilogue, a row program
(softmax, layer norm, reductions with their neighbours), an elementwise
chain, pooling, data movement — else split op by op with intermediates in
device scratch. Before emission, one pass over all GPU kernels decides
which activations are stored channels-last (`channels_last_values`). Every
kernel's shared memory is dynamic (sized at launch). With `emulate=True`
every kernel is also built for the host
CPU (dsc/runtime/gpu_emulator.py runs them), so the tests check GPU kernels
numerically on machines without a GPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from types import SimpleNamespace

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from dsc.backends.cpu.codegen import ALIGN, BufRef, Codegen, NativeProgram, Step, compile_llvm_ir, llvm_type
from dsc.backends.cpu.irb import I8P, I64, VOID, const_i64, emit_barrier
from dsc.backends.cpu.target import CpuTarget, host_target, init_llvm
from dsc.backends.cuda import conv, data, gemm, rows
from dsc.backends.cuda.ew import mem_type
from dsc.backends.cuda.gpubuilder import GpuBuilder
from dsc.backends.cuda.target import DATALAYOUT, TRIPLE, GpuTarget
from dsc.dialects import graph as g
from dsc.dialects import kernel as k
from dsc.dialects.tensor_types import sig_of
from dsc.runtime.errors import DscError

GPU = "cuda:0"

# emitters that repack constant leaves before emission: (name, matches(group), emit, prepare(ctx, group))
PREPARE = [("conv", conv.match_conv, conv.emit_conv, conv.prepare_conv)]

# fused emitters, tried in order: (name, matches(group), emit(ctx, group))
FUSED = [
    ("conv", conv.match_conv, conv.emit_conv),
    ("gemm", gemm.match_matmul, gemm.emit_matmul),
    ("rows", rows.match_rows, rows.emit_rows),
    ("elementwise", data.match_elementwise, data.emit_elementwise),
    ("pool", data.match_pool, data.emit_pool),
    ("data", data.match_data, data.emit_data),
]


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class Launch:
    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    smem: int  # the kernel's shared memory: dynamic bytes each launch passes
    args: list[BufRef]
    label: str


@dataclass
class Copy:
    src: BufRef
    dst: BufRef
    nbytes: int
    label: str


@dataclass
class GpuProgram:
    sm: str
    ptx_isa: str
    min_driver: int
    ptx: str
    arena_bytes: int
    schedule: list[dict]
    kernels: list[str]
    emu_object: bytes | None = None
    llvm_ir: str = ""


@dataclass
class HeteroProgram:
    cpu: NativeProgram
    gpu: GpuProgram
    segments: list[str]  # entry symbol of each CPU segment


# ------------------------------------------------------------ groups and the emit context


@dataclass
class Group:
    """Ops emitted together: what they read from memory (leaves), constant data, what they write."""

    ops: list
    leaves: dict  # SSAValue -> BufRef
    consts: dict  # SSAValue -> np.ndarray
    outputs: dict  # SSAValue -> BufRef (insertion ordered)
    index: dict = field(default_factory=dict)  # SSAValue -> kernel parameter position
    layout: dict = field(default_factory=dict)  # SSAValue -> how a leaf or output is stored, if not as its type says ("ohwi" weights, "nhwc" activations)


@dataclass(eq=False)
class LazyWeight:
    """A constant only GPU kernels read: it enters the weights blob when a kernel reads it as is,
    so a constant every reader repacks (`prepare` hooks) is not stored twice."""

    key: str
    array: np.ndarray
    dtype: np.dtype
    shape: tuple


class GpuModule:
    """The kernels of one program for one machine ("nvptx" or "emu")."""

    def __init__(self, mode: str, smem_limit: int = 99 * 1024):
        self.mode = mode
        self.smem_limit = smem_limit  # dynamic shared memory a kernel may take (GpuTarget.smem_limit)
        self.llmod = ir.Module(name="dsc_gpu")
        if mode == "nvptx":
            self.llmod.triple = TRIPLE
            self.llmod.data_layout = DATALAYOUT
        else:
            self.llmod.triple = host_target().triple
        self.names: set[str] = set()

    def unique(self, name: str) -> str:
        base, n = name, 1
        while name in self.names:
            n += 1
            name = f"{base}_{n}"
        self.names.add(name)
        return name

    def build_kernel(self, name: str, refs: list[BufRef], threads: int, body, min_blocks: int = 0) -> int:
        """Define kernel `name` over buffers `refs`; body(gb, ptrs). Returns its shared memory bytes (dynamic, see GpuBuilder.shared).

        `min_blocks`: blocks that should fit on one multiprocessor at once (ptxas
        caps the registers per thread to allow it)."""
        types = [mem_type(r.dtype).as_pointer() for r in refs]
        if self.mode == "emu":
            types.append(I64.as_pointer())
        fn = ir.Function(self.llmod, ir.FunctionType(VOID, types), name)
        where = [(r.kind, r.index) for r in refs]
        for a, w in zip(fn.args[: len(refs)], where):
            if where.count(w) == 1:
                a.add_attribute("noalias")
        if self.mode == "nvptx":
            fn.calling_convention = "ptx_kernel"
            md = self.llmod.add_metadata([fn, ir.MetaDataString(self.llmod, "maxntidx"), ir.Constant(ir.IntType(32), threads)])
            self.llmod.add_named_metadata("nvvm.annotations", md)
            if min_blocks:
                md = self.llmod.add_metadata([fn, ir.MetaDataString(self.llmod, "minctasm"), ir.Constant(ir.IntType(32), min_blocks)])
                self.llmod.add_named_metadata("nvvm.annotations", md)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        gb = GpuBuilder(b, self.llmod, self.mode, fn, fn.args[-1] if self.mode == "emu" else None)
        gb.threads = threads
        gb.prologue()
        body(gb, list(fn.args[: len(refs)]))
        gb.b.ret_void()
        if gb.smem.size > self.smem_limit:
            raise DscError(f"GPU kernel {name} needs {gb.smem.size} bytes of shared memory (at most {self.smem_limit})")
        return gb.smem.size


class EmitCtx:
    """What an emitter may ask for while emitting one kernel.fused: kernels, launches, scratch."""

    def __init__(self, gm: GpuModule, gpu: GpuTarget, prefix: str, scratch_base: int, weights=None):
        self.gm = gm
        self.weights = weights  # the WeightBlob (constants, and the ones emitters repack)
        self.sms = gpu.sm_count
        self.tf32 = gpu.tf32
        self.smem_limit = gpu.smem_limit
        self.wgmma = gpu.wgmma  # Hopper's warpgroup MMA (sm_90a): wgmma.py
        self.prefix = prefix
        self.launches: list[Launch] = []
        self.scratch_top = scratch_base
        self.refs: list[BufRef] = []

    def set_group(self, grp: Group) -> None:
        """Kernel parameters of a group: one per distinct buffer, leaves first."""
        refs: list[BufRef] = []
        slot: dict = {}
        grp.index = {}
        for v, ref in list(grp.leaves.items()) + list(grp.outputs.items()):
            key = (ref.kind, ref.index, np.dtype(ref.dtype))
            if key not in slot:
                slot[key] = len(refs)
                refs.append(ref)
            grp.index[v] = slot[key]
        self.refs = refs

    def launch(self, suffix: str, refs: list[BufRef], grid, threads: int, body, label: str, extra_writes=(), extra_reads=(), min_blocks: int = 0) -> None:
        name = self.gm.unique(f"{self.prefix}_{suffix}")
        smem = self.gm.build_kernel(name, list(refs), threads, body, min_blocks)
        label = label() if callable(label) else label  # may say what the build chose (gemm.emit_gemm)
        grid = tuple(int(x) for x in (tuple(grid) + (1, 1, 1))[:3])
        self.launches.append(Launch(name, grid, (int(threads), 1, 1), smem, list(refs), f"{self.prefix}: {label}"))

    def weight(self, array: np.ndarray, key: str) -> BufRef:
        """A constant in the weights blob (deduplicated by key: the nvptx and emu builds ask alike)."""
        return BufRef("weight", self.weights.add(array, key), array.dtype, tuple(array.shape))

    def resolve(self, ref):
        return self.weight(ref.array, ref.key) if isinstance(ref, LazyWeight) else ref

    def scratch(self, nbytes: int, dtype=np.float32) -> BufRef:
        dt = np.dtype(dtype)
        off = self.scratch_top
        self.scratch_top += _align(max(nbytes, 1))
        return BufRef("gpu", off, dt, (max(nbytes, dt.itemsize) // dt.itemsize,))


def emit_group(ctx: EmitCtx, grp: Group) -> None:
    for _name, matches, emit in FUSED:
        if matches(grp):
            ctx.set_group(grp)
            emit(ctx, grp)
            return
    if len(grp.ops) <= 1:
        op = grp.ops[0] if grp.ops else None
        raise DscError(f"the CUDA backend has no code generator for {op.name if op else 'an empty kernel'} ({ctx.prefix})", hint="place it on the CPU: --place OP=cpu")
    # op by op, intermediates in device scratch
    where = dict(grp.leaves)
    for op in grp.ops:
        if isinstance(op, g.ReshapeOp) and op.input in where:
            src = where[op.input]
            s = sig_of(op.result.type)
            where[op.result] = BufRef(src.kind, src.index, s.dtype, s.shape)
            continue
        outs = {}
        for r in op.results:
            s = sig_of(r.type)
            ref = grp.outputs.get(r) or ctx.scratch(int(np.prod(s.shape, dtype=np.int64)) * s.dtype.itemsize)
            ref = BufRef(ref.kind, ref.index, s.dtype, s.shape)
            outs[r] = ref
            where[r] = ref
        leaves = {v: where[v] for v in op.operands if v in where}
        consts = {v: grp.consts[v] for v in op.operands if v in grp.consts}
        emit_group(ctx, Group([op], leaves, consts, outs))
    for v, ref in grp.outputs.items():
        have = where[v]
        if (have.kind, have.index) != (ref.kind, ref.index):
            data.emit_copy(ctx, have, ref, "copy")


def kernel_group(kop: k.FusedOp, ins: list, outs: list, in_consts: list, weight_ref) -> tuple[Group, list]:
    """The Group of a GPU kernel.fused (body args -> `ins`, yielded values -> `outs`), and the (value, ref)
    outputs that are plain copies of a leaf or of another output."""
    body = kop.body.block
    leaves, consts = {}, {}
    for a, ref, c in zip(body.args, ins, in_consts):
        leaves[a] = ref
        if c is not None:
            consts[a] = c
    ops = []
    for op in body.ops:
        if isinstance(op, g.ConstantOp):
            leaves[op.result] = weight_ref(op)
            consts[op.result] = op.array
        elif not isinstance(op, k.YieldOp):
            ops.append(op)
    outputs, copies = {}, []
    for v, ref in zip(body.last_op.operands, outs):
        if v in outputs or v in leaves:
            copies.append((v, ref))
        else:
            outputs[v] = ref
    return Group(ops, leaves, consts, outputs), copies


def channels_last_values(gpu_kernels: list, tf32: bool, smem_limit: int) -> set:
    """Activations to store channels-last ([batch][position][channel]).

    Candidates: the outputs of tensor-core GEMM convolutions (conv.writes_channels_last) read only by
    GPU kernels. A candidate stays one while every reader can read it so (conv.reads_channels_last:
    a convolution's input, the residual of a convolution whose outputs are channels-last too, a global
    pool); dropping one can drop others (a residual reader's outputs), so this repeats until nothing
    changes: the largest consistent set. 2-d pools between two channels-last tensors are candidates too
    (data.pool_channels_last). ResNet: every convolution output and the max pool's, so the only
    transpose kernel left is the stem's input copy."""
    groups = {kop: kernel_group(kop, ins, outs, consts, lambda op: None)[0] for kop, ins, outs, consts in gpu_kernels}
    ctx = SimpleNamespace(tf32=tf32, smem_limit=smem_limit)
    cand: set = set()
    pool_input: dict = {}  # a channels-last pool's output -> its input (which must be channels-last too)
    for kop, grp in groups.items():
        pool = bool(data.pool_channels_last(grp))
        if not (pool or conv.writes_channels_last(ctx, grp)):
            continue
        yields = list(kop.body.block.last_op.operands)
        for i, v in enumerate(kop.outputs):
            if yields[i] not in grp.outputs or yields.count(yields[i]) > 1 or not v.uses or not all(u.operation in groups for u in v.uses):
                continue
            cand.add(v)
            if pool:
                pool_input[v] = kop.operands[list(kop.body.block.args).index(grp.ops[0].input)]

    def readable(v) -> bool:
        for u in {use.operation for use in v.uses}:
            args = [u.body.block.args[i] for i, x in enumerate(u.operands) if x is v]
            out_nhwc = all(o in cand for o in u.outputs)
            if not all(conv.reads_channels_last(ctx, groups[u], a, out_nhwc) for a in args):
                return False
        return True

    changed = True
    while changed:
        drop = {v for v in cand if not readable(v) or (v in pool_input and pool_input[v] not in cand)}
        cand -= drop
        changed = bool(drop)
    return cand


def emit_gpu_kernel(ctx: EmitCtx, kop: k.FusedOp, ins: list[BufRef], outs: list[BufRef], in_consts: list, weight_ref, nhwc: set = frozenset()) -> None:
    grp, copies = kernel_group(kop, ins, outs, in_consts, weight_ref)
    ops, leaves, outputs = grp.ops, grp.leaves, grp.outputs
    body = kop.body.block
    for a, v in zip(body.args, kop.inputs):
        if v in nhwc:
            grp.layout[a] = "nhwc"
    for y, v in zip(body.last_op.operands, kop.outputs):
        if v in nhwc:
            grp.layout[y] = "nhwc"
    for _name, matches, emit, prepare in PREPARE:
        if ops and matches(grp):
            prepare(ctx, grp)  # may replace constant leaves by repacked ones
            break
    grp.leaves = leaves = {v: ctx.resolve(r) for v, r in grp.leaves.items()}
    if ops:
        emit_group(ctx, grp)
    for v, ref in copies:
        src = outputs.get(v) or leaves[v]
        data.emit_copy(ctx, src, ref, "copy")


# ------------------------------------------------------------ the host side


class HeteroCodegen(Codegen):
    """The CPU backend's driver over a placed module: CPU kernels as steps in segments, GPU kernels aside."""

    def __init__(self, module, cpu: CpuTarget, gpu: GpuTarget, emulate: bool = False):
        super().__init__(module, cpu)
        self.gpu = gpu
        self.emulate = emulate
        arena = self.fn.attributes.get("dsc.arena")
        self.gpu_arena_planned = int(arena.data[GPU].value.data) if arena is not None and GPU in arena.data else 0
        self.order: list[tuple] = []  # ("cpu", segment) | ("copy", Copy) | ("gpu", kernel position)
        self.segments: list[list[int]] = []
        self.gpu_kernels: list[tuple] = []

    PRODUCERS = (k.FusedOp, k.TransferOp)

    def _const_ref(self, op: g.ConstantOp):
        """A constant only GPU kernels read enters the weights blob when one reads it as is (LazyWeight)."""
        if op.result.uses and all(isinstance(u.operation, k.FusedOp) and (u.operation.device.data or "cpu") != "cpu" for u in op.result.uses):
            s = sig_of(op.result.type)
            return LazyWeight(op.blob.key, op.array, s.dtype, s.shape)
        return super()._const_ref(op)

    def _result_refs(self, op, root_out: dict) -> None:
        """Results on the CPU: as the CPU backend; on the GPU: the device arena (never a graph output)."""
        dev = op.dst.data if isinstance(op, k.TransferOp) else (op.device.data or "cpu")
        if dev == "cpu":
            return super()._result_refs(op, root_out)
        offs = op.offsets.get_values() if op.offsets is not None else None
        for n, r in enumerate(op.results):
            if r in root_out:
                raise DscError(f"{op.name} result {n} is a graph output but lives on {dev}", hint="run place-devices: graph outputs come back to the CPU through kernel.transfer")
            if offs is None or offs[n] < 0:
                raise DscError(f"{op.name} result {n} has no arena offset", hint="run plan-memory before code generation")
            s = sig_of(r.type)
            self.refs[r] = BufRef("gpu", int(offs[n]), s.dtype, s.shape)

    def _weight_ref(self, op: g.ConstantOp) -> BufRef:
        """A constant inside a GPU kernel's body: in the blob (eagerly)."""
        return super()._const_ref(op)

    def run(self) -> HeteroProgram:
        inputs, outputs, sources = self._assign_buffers()
        seg: list[int] | None = None
        for op in self.fn.body.block.ops:
            if isinstance(op, k.FusedOp) and (op.device.data or "cpu") == "cpu":
                if seg is None:
                    seg = []
                    self.segments.append(seg)
                    self.order.append(("cpu", len(self.segments) - 1))
                first = len(self.steps)
                self._emit_kernel(op)
                seg.extend(range(first, len(self.steps)))
            elif isinstance(op, k.FusedOp):
                seg = None
                ins = [self.refs[v] for v in op.inputs]
                outs = [self.refs[r] for r in op.outputs]
                consts = [self.consts.get(v) for v in op.inputs]
                self.gpu_kernels.append((op, ins, outs, consts))
                self.order.append(("gpu", len(self.gpu_kernels) - 1))
            elif isinstance(op, k.TransferOp):
                seg = None
                src, dst = self.refs[op.input], self.refs[op.result]
                s = sig_of(op.input.type)
                nb = int(np.prod(s.shape, dtype=np.int64)) * s.dtype.itemsize
                self.order.append(("copy", Copy(src, dst, nb, f"transfer {op.src.data} -> {op.dst.data}")))
        self._emit_entry()
        self._emit_segments()
        text = str(self.llmod)
        obj = compile_llvm_ir(text, self.target)
        cpu = NativeProgram(obj, self.weights.bytes(), _align(self.arena_bytes + self.scratch_bytes), inputs, outputs, sources, self.steps, text)
        gpu = self._gpu_program()
        # the GPU emitters may add weights (after the CPU blob was taken): take it again
        cpu.weights = self.weights.bytes()
        return HeteroProgram(cpu, gpu, [f"dsc_seg{i}" for i in range(len(self.segments))])

    def _emit_segments(self) -> None:
        barrier = emit_barrier(self.llmod, self.target.arch)
        i8pp = I8P.as_pointer()
        for si, steps in enumerate(self.segments):
            fn = ir.Function(self.llmod, ir.FunctionType(VOID, [i8pp, i8pp, I8P, I8P, I64, I64, I64.as_pointer()]), f"dsc_seg{si}")
            inputs, outputs, weights, arena, tid, nthreads, bar = fn.args
            b = ir.IRBuilder(fn.append_basic_block("entry"))
            for n, si_step in enumerate(steps):
                step = self.steps[si_step]
                ptrs = []
                for ref in step.args:
                    if ref.kind in ("input", "output"):
                        base = b.load(b.gep(inputs if ref.kind == "input" else outputs, [const_i64(ref.index)], inbounds=True))
                    else:
                        base = b.gep(weights if ref.kind == "weight" else arena, [const_i64(ref.index)], inbounds=True)
                    ptrs.append(b.bitcast(base, llvm_type(ref.dtype).as_pointer()))
                b.call(self.llmod.globals[step.name], ptrs + [tid, nthreads])
                if n + 1 < len(steps):
                    b.call(barrier, [bar, nthreads])
            b.ret_void()

    def _emit_gpu(self, mode: str, chunks: int = 1) -> tuple[list[GpuModule], list[list[Launch]], int]:
        """The kernels in `chunks` modules (compiled in parallel), launches per kernel.fused, arena bytes."""
        gms = [GpuModule(mode, self.gpu.smem_limit) for _ in range(max(1, chunks))]
        names: set[str] = set()
        for gm in gms:
            gm.names = names  # kernel names unique across the chunks
        per_kernel = []
        scratch = 0
        base = _align(self.gpu_arena_planned)
        nhwc = channels_last_values(self.gpu_kernels, self.gpu.tf32, self.gpu.smem_limit)
        for n, (kop, ins, outs, consts) in enumerate(self.gpu_kernels):
            ctx = EmitCtx(gms[n % len(gms)], self.gpu, kop.sym_name.data, base, self.weights)
            emit_gpu_kernel(ctx, kop, ins, outs, consts, self._weight_ref, nhwc)
            per_kernel.append(ctx.launches)
            scratch = max(scratch, ctx.scratch_top - base)
        return gms, per_kernel, base + scratch

    def _gpu_program(self) -> GpuProgram:
        chunks = max(1, min(os.cpu_count() or 1, 8, len(self.gpu_kernels) // 4))
        gms, launches, arena = self._emit_gpu("nvptx", chunks)
        texts = [str(gm.llmod) for gm in gms]
        ptx = compile_ptx_parallel(texts, self.gpu) if self.gpu_kernels else ""
        text = "\n".join(texts)
        emu = None
        if self.emulate:
            ems, elaunches, earena = self._emit_gpu("emu")
            assert [[(x.kernel, x.grid, x.block, x.args) for x in ls] for ls in elaunches] == [[(x.kernel, x.grid, x.block, x.args) for x in ls] for ls in launches]
            emu = compile_emulation(str(ems[0].llmod))
        schedule = []
        for kind, what in self.order:
            if kind == "cpu":
                schedule.append({"op": "cpu", "segment": what, "entry": f"dsc_seg{what}", "steps": [self.steps[i].label for i in self.segments[what]]})
            elif kind == "copy":
                schedule.append({"op": "copy", "src": ref_dict(what.src), "dst": ref_dict(what.dst), "bytes": what.nbytes, "label": what.label})
            else:
                for ln in launches[what]:
                    schedule.append({"op": "launch", "kernel": ln.kernel, "grid": list(ln.grid), "block": list(ln.block), "smem": ln.smem, "args": [ref_dict(r) for r in ln.args], "label": ln.label})
        names = [ln.kernel for ls in launches for ln in ls]
        return GpuProgram(self.gpu.sm, self.gpu.ptx_isa_str, self.gpu.min_driver, ptx, _align(max(arena, 64)), schedule, names, emu, text)


def ref_dict(ref: BufRef) -> dict:
    return {"kind": ref.kind, "index": int(ref.index), "dtype": str(np.dtype(ref.dtype)), "shape": [int(s) for s in ref.shape]}


# ------------------------------------------------------------ LLVM -> PTX, host object, ptxas


def compile_ptx(text: str, gpu: GpuTarget, context=None) -> str:
    """Verify and optimize (O3) NVPTX LLVM IR; the PTX text for `gpu`."""
    init_llvm()
    mod = llvm.parse_assembly(text, context=context)
    mod.verify()
    tm = gpu.target_machine()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return tm.emit_assembly(mod)


def compile_ptx_parallel(texts: list[str], gpu: GpuTarget) -> str:
    """Several modules compiled on threads (each its own LLVM context), joined into one PTX text.

    A PTX module is a header (.version, .target, .address_size) and then
    definitions; kernel names are unique across the modules, so the
    definitions of all of them form one module under the first header.
    """
    init_llvm()
    if len(texts) == 1:
        return compile_ptx(texts[0], gpu)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(texts)) as pool:
        parts = list(pool.map(lambda t: compile_ptx(t, gpu, llvm.create_context()), texts))
    head, body = _split_ptx(parts[0])
    out = [head, body]
    for p in parts[1:]:
        h, b = _split_ptx(p)
        if h != head:
            raise DscError("PTX modules of one program disagree on their header")
        out.append(b)
    return "\n".join(out)


def _split_ptx(ptx: str) -> tuple[str, str]:
    lines = ptx.splitlines()
    cut = 0
    for i, line in enumerate(lines):
        if line.startswith((".version", ".target", ".address_size")):
            cut = i + 1
    return "\n".join(lines[:cut]), "\n".join(lines[cut:])


def compile_emulation(text: str) -> bytes:
    """The emulation build of the kernels: an object file for this machine."""
    init_llvm()
    mod = llvm.parse_assembly(text)
    mod.verify()
    tm = host_target().target_machine()
    pto = llvm.create_pipeline_tuning_options(speed_level=2)
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return tm.emit_object(mod)


def ptxas_path() -> str | None:
    return shutil.which("ptxas")


def ptxas(ptx: str, sm: str) -> tuple[bool, str]:
    """Assemble PTX with the CUDA toolkit's ptxas for `sm`: (ok, messages)."""
    exe = ptxas_path()
    if exe is None:
        return False, "ptxas is not on the PATH"
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        r = subprocess.run([exe, f"-arch={sm}", src, "-o", os.path.join(d, "k.cubin")], capture_output=True, text=True)
        return r.returncode == 0, (r.stdout + r.stderr).strip()


def generate(module, cpu: CpuTarget, gpu: GpuTarget, emulate: bool = False) -> HeteroProgram:
    """Compile fused, placed, planned kernel IR for a CPU + GPU target."""
    return HeteroCodegen(module, cpu, gpu, emulate).run()


__all__ = ["generate", "HeteroProgram", "GpuProgram", "Launch", "ptxas", "ptxas_path", "compile_ptx", "Step"]
