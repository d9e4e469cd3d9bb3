"""place-devices: put each kernel on the CPU or the GPU, and insert the transfers.

Input: fused IR (`is_fused`: @main holds only graph.constant, graph.reshape,
kernel.fused, kernel.transfer and func.return). Transfers already present
(from an earlier run) are dropped and placement starts afresh.

Output: every kernel.fused has `device` "cpu" or "cuda:0"; a kernel.transfer
(`src`, `dst`) sits before the first consumer of each value that crosses
devices (for a graph output: right after its producer), one per value and
destination device, reused by all later consumers. Views travel as their
base buffer: a graph.reshape of a value that must cross is rebuilt after
the transfer of the value it views.

Guarantees:
* graph inputs and outputs live on the CPU;
* a kernel goes to the GPU only if every op in it is in `GPU_OPS`;
* every operand of a kernel (and of func.return) lives on the consumer's
  device, or is a graph.constant (weights have no device: the runtime uploads
  each once, at load time, to every device that reads it);
* overrides (`NODE_OR_OP=cpu|gpu`) win over the cost model; a node name
  (an ONNX name in a kernel's `sources`, or the kernel's sym_name; `*` and `?`
  glob) wins over an op name (`graph.softmax` or `softmax`), and "cpu" wins a
  tie. Forcing a kernel with an op the GPU lacks onto the GPU is an error.

The cost model estimates each kernel's time on each device from its FLOPs and
the bytes it moves (roofline, plus a launch overhead) and each transfer's
time from its bytes over the link (PCIe 25 GB/s, or 200 GB/s where the CPU
and GPU share DRAM: `shared_memory=true`, implied for integrated GPUs such as
Orin's sm_87; an SM without an entry in `GPU_MODELS` is costed as sm_80).
Placement minimises the total (compute + transfers) exactly,
as a minimum s-t cut (Stone, 1977): a transfer is a hyperedge paid once per
value and direction, so tiny kernels between CPU kernels stay on the CPU and
a chain of GPU-worthy kernels moves together.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections import deque
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from dsc.dialects import graph as g
from dsc.dialects import kernel as k
from dsc.dialects.graph import Graph
from dsc.dialects.tensor_types import sig_of
from dsc.passes.base import is_fused, main_func, require
from dsc.runtime.errors import DscError

CPU, GPU = "cpu", "cuda:0"

# ------------------------------------------------------------ op tables

# The graph ops the GPU backend supports (inside a kernel body).
GPU_OPS: tuple[type[Operation], ...] = (
    g.UnaryOp, g.BinaryOp, g.WhereOp, g.CastOp,  # elementwise (incl. compare, clip, gelu, softmax)
    g.ConvOp, g.BatchNormOp, g.GemmOp, g.MatMulOp,
    g.MaxPoolOp, g.AvgPoolOp, g.GlobalAvgPoolOp, g.GlobalMaxPoolOp,
    g.LayerNormOp, g.ReduceOp,
    g.TransposeOp, g.ConcatOp, g.SliceOp, g.PadOp, g.GatherOp, g.BroadcastToOp, g.ReshapeOp,
    g.ConstantOp, k.YieldOp,
)
# UnaryOp subclasses the GPU backend does not have.
GPU_EXCLUDED: tuple[type[Operation], ...] = (g.LrnOp,)

# Elementwise ops that cost several FLOPs per element (special-function units).
_TRANSCENDENTAL = (g.ExpOp, g.LogOp, g.TanhOp, g.ErfOp, g.SigmoidOp, g.GeluOp, g.SoftplusOp, g.PowOp, g.SqrtOp)


def gpu_supports(op: Operation) -> bool:
    return isinstance(op, GPU_OPS) and not isinstance(op, GPU_EXCLUDED)


def unsupported_on_gpu(kernel: k.FusedOp) -> list[Operation]:
    return [op for op in kernel.body.walk() if op is not kernel and not gpu_supports(op)]


# ------------------------------------------------------------ cost model


@dataclass(frozen=True)
class DeviceModel:
    """Sustained throughput of a device: FLOP/s, bytes/s, seconds per launch."""

    flops: float
    bandwidth: float
    launch: float

    def time(self, flops: float, nbytes: float) -> float:
        return self.launch + max(flops / self.flops, nbytes / self.bandwidth)


# fp32, about half of peak; the CPU figure is a multi-threaded LLVM kernel.
CPU_MODEL = DeviceModel(flops=100e9, bandwidth=20e9, launch=1e-6)
GPU_MODELS: dict[str, DeviceModel] = {
    "sm_80": DeviceModel(10e12, 1.3e12, 5e-6),  # A100
    "sm_86": DeviceModel(15e12, 0.8e12, 5e-6),  # RTX 30xx, A10
    "sm_87": DeviceModel(2.5e12, 0.17e12, 5e-6),  # Jetson Orin
    "sm_89": DeviceModel(35e12, 0.8e12, 5e-6),  # RTX 40xx, L4/L40
    "sm_90": DeviceModel(30e12, 2.8e12, 5e-6),  # H100, H200
}
INTEGRATED_GPUS = frozenset({"sm_53", "sm_62", "sm_72", "sm_87"})  # share DRAM with the CPU


@dataclass(frozen=True)
class LinkModel:
    bandwidth: float
    latency: float

    def time(self, nbytes: float) -> float:
        return self.latency + nbytes / self.bandwidth


PCIE = LinkModel(25e9, 10e-6)
SHARED_DRAM = LinkModel(200e9, 2e-6)


def nbytes(t) -> int:
    s = sig_of(t)
    return int(np.prod(s.shape, dtype=np.int64)) * s.dtype.itemsize


def _numel(v: SSAValue) -> int:
    return int(np.prod(sig_of(v.type).shape, dtype=np.int64))


def op_flops(op: Operation) -> float:
    """Arithmetic of one graph op (multiply-adds count 2); data movement is 0."""
    if isinstance(op, g.ConvOp):
        w = sig_of(op.weight.type).shape
        return 2.0 * _numel(op.result) * int(np.prod(w[1:]))
    if isinstance(op, g.GemmOp):
        a = sig_of(op.a.type).shape
        return 2.0 * _numel(op.result) * (a[0] if op.py_attrs()["trans_a"] else a[1])
    if isinstance(op, g.MatMulOp):
        return 2.0 * _numel(op.result) * sig_of(op.lhs.type).shape[-1]
    if isinstance(op, g.MaxPoolOp | g.AvgPoolOp):
        return float(_numel(op.result) * int(np.prod(op.py_attrs()["kernel_shape"])))
    if isinstance(op, g.GlobalAvgPoolOp | g.GlobalMaxPoolOp | g.ReduceOp):
        return float(_numel(op.operands[0]))
    if isinstance(op, g.SoftmaxOp | g.LogSoftmaxOp | g.LrnOp):
        return 5.0 * _numel(op.result)
    if isinstance(op, g.LayerNormOp):
        return 8.0 * _numel(op.result)
    if isinstance(op, _TRANSCENDENTAL):
        return 8.0 * _numel(op.results[0])
    if isinstance(op, g.UnaryOp | g.BinaryOp | g.WhereOp | g.BatchNormOp):
        return float(_numel(op.results[0]))
    return 0.0


def kernel_cost(kernel: k.FusedOp) -> tuple[float, float]:
    """(FLOPs, bytes read and written at the kernel's boundary)."""
    flops = sum(op_flops(op) for op in kernel.body.walk() if op is not kernel)
    moved = sum(nbytes(v.type) for v in kernel.inputs) + sum(nbytes(r.type) for r in kernel.outputs)
    return flops, float(moved)


# ------------------------------------------------------------ overrides


def parse_overrides(text: str) -> list[tuple[str, str]]:
    """'a=cpu,graph.softmax=gpu' -> [(name, device)], with devices "cpu"/"cuda:0"."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, dev = item.rpartition("=")
        dev = dev.strip().lower()
        if not sep or not name.strip():
            raise DscError(f"place-devices: bad override '{item}'", hint="write overrides as NODE_OR_OP=cpu|gpu, comma-separated")
        if dev not in ("cpu", "gpu", "cuda", "cuda:0"):
            raise DscError(f"place-devices: unknown device '{dev}' in override '{item}'", hint="devices: cpu, gpu")
        out.append((name.strip(), CPU if dev == "cpu" else GPU))
    return out


_OP_NAMES = frozenset(op.name for op in Graph.operations)


def _op_names(kernel: k.FusedOp) -> set[str]:
    return {op.name for op in kernel.body.walk() if op is not kernel}


def forced_device(kernel: k.FusedOp, overrides: list[tuple[str, str]]) -> str | None:
    """The device overrides force on a kernel (node names first, CPU wins ties)."""
    nodes = [*kernel.source_names, kernel.sym_name.data]
    ops = _op_names(kernel)
    for level in (
        [d for n, d in overrides if any(fnmatch.fnmatchcase(s, n) for s in nodes)],
        [d for n, d in overrides if n in ops or f"graph.{n}" in ops],
    ):
        if level:
            return CPU if CPU in level else GPU
    return None


def check_overrides(kernels: list[k.FusedOp], overrides: list[tuple[str, str]]) -> None:
    names = {s for kern in kernels for s in (*kern.source_names, kern.sym_name.data)}
    for n, _ in overrides:
        if n in _OP_NAMES or f"graph.{n}" in _OP_NAMES or any(fnmatch.fnmatchcase(s, n) for s in names):
            continue
        close = difflib.get_close_matches(n, sorted(names | _OP_NAMES), n=3)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise DscError(f"place-devices: override '{n}' matches no ONNX node, kernel or graph op", hint=hint + "`dsc compile MODEL --compile-to fusion` prints the kernels with their sources")


# ------------------------------------------------------------ min cut


class _FlowGraph:
    """Dinic's max flow on integer capacities; node 0 is the source, 1 the sink."""

    def __init__(self) -> None:
        self.adj: list[list[int]] = [[], []]
        self.to: list[int] = []
        self.cap: list[int] = []

    def node(self) -> int:
        self.adj.append([])
        return len(self.adj) - 1

    def edge(self, u: int, v: int, c: int) -> None:
        if u == v or c <= 0:
            return
        for a, b, cc in ((u, v, c), (v, u, 0)):
            self.adj[a].append(len(self.to))
            self.to.append(b)
            self.cap.append(cc)

    def _levels(self) -> list[int] | None:
        level = [-1] * len(self.adj)
        level[0] = 0
        q = deque([0])
        while q:
            u = q.popleft()
            for e in self.adj[u]:
                if self.cap[e] > 0 and level[self.to[e]] < 0:
                    level[self.to[e]] = level[u] + 1
                    q.append(self.to[e])
        return level if level[1] >= 0 else None

    def _augment(self, level: list[int], it: list[int]) -> int:
        # Iterative DFS from the source to the sink along the level graph.
        path: list[int] = []
        u = 0
        while True:
            if u == 1:
                f = min(self.cap[e] for e in path)
                for e in path:
                    self.cap[e] -= f
                    self.cap[e ^ 1] += f
                return f
            while it[u] < len(self.adj[u]):
                e = self.adj[u][it[u]]
                if self.cap[e] > 0 and level[self.to[e]] == level[u] + 1:
                    break
                it[u] += 1
            else:
                if not path:
                    return 0
                level[u] = -1  # dead end
                e = path.pop()
                u = self.to[e ^ 1]
                it[u] += 1
                continue
            path.append(e)
            u = self.to[e]

    def source_side(self) -> set[int]:
        """Max flow, then the nodes still reachable from the source: the min cut's source side."""
        while (level := self._levels()) is not None:
            it = [0] * len(self.adj)
            while self._augment(level, it):
                pass
        seen = {0}
        q = deque([0])
        while q:
            u = q.popleft()
            for e in self.adj[u]:
                if self.cap[e] > 0 and self.to[e] not in seen:
                    seen.add(self.to[e])
                    q.append(self.to[e])
        return seen


def _base(v: SSAValue) -> SSAValue:
    while isinstance(v.owner, g.ReshapeOp):
        v = v.owner.input
    return v


def _reduced_precision(kernel: k.FusedOp) -> bool:
    """True if the kernel touches float16/bfloat16 tensors (which CPU targets refuse)."""
    vals = list(kernel.inputs) + list(kernel.outputs)
    return any(sig_of(v.type).dtype.itemsize == 2 and sig_of(v.type).dtype.kind in "fV" for v in vals)


def choose_devices(ops: list[Operation], gpu: DeviceModel, link: LinkModel, overrides: list[tuple[str, str]]) -> dict[k.FusedOp, str]:
    """The cheapest device for every kernel: compute plus transfers, as a min cut."""
    kernels = [op for op in ops if isinstance(op, k.FusedOp)]
    ps = 1e12  # capacities in picoseconds
    big = 10**30  # "never": far above any sum of finite capacities
    fg = _FlowGraph()
    node = {kern: fg.node() for kern in kernels}
    costs = {}
    for kern in kernels:
        forced = forced_device(kern, overrides)
        bad = unsupported_on_gpu(kern)
        if forced == GPU and bad:
            raise DscError(
                f"place-devices: kernel @{kern.sym_name.data} ({', '.join(kern.source_names) or 'no sources'}) is forced onto the GPU, but the GPU backend has no {bad[0].name}",
                hint="drop the gpu override for it, or split the op out of the kernel",
            )
        flops, moved = kernel_cost(kern)
        # the CPU backend computes in float32 only: reduced-precision kernels must run on the GPU
        cpu_ok = forced != GPU and not (_reduced_precision(kern) and not bad)
        costs[kern] = (CPU_MODEL.time(flops, moved) if cpu_ok else None, None if forced == CPU or bad else gpu.time(flops, moved))
    for kern, (cpu_t, gpu_t) in costs.items():
        fg.edge(0, node[kern], big if gpu_t is None else round(gpu_t * ps))  # cut when on the GPU
        fg.edge(node[kern], 1, big if cpu_t is None else round(cpu_t * ps))  # cut when on the CPU

    # Consumers of each buffer (views resolved to their base); 0 stands for the CPU.
    producers: dict[SSAValue, int] = {}
    consumers: dict[SSAValue, set[int]] = {}
    for op in ops:
        if isinstance(op, k.FusedOp):
            producers.update((r, node[op]) for r in op.outputs)
        if isinstance(op, k.FusedOp | func.ReturnOp):
            for v in op.operands:
                b = _base(v)
                if isinstance(b.owner, g.ConstantOp):
                    continue
                producers.setdefault(b, 0)  # a graph input
                consumers.setdefault(b, set()).add(0 if isinstance(op, func.ReturnOp) else node[op])
    for b, cons in consumers.items():
        p = producers[b]
        w = round(link.time(nbytes(b.type)) * ps)
        up = fg.node()  # in the GPU side iff some consumer is: the CPU->GPU copy is paid
        fg.edge(p, up, w)
        for c in cons:
            fg.edge(up, c, big)
        if p != 0:
            down = fg.node()  # in the CPU side iff some consumer is: the GPU->CPU copy is paid
            fg.edge(down, p, w)
            for c in cons:
                fg.edge(c, down, big)
    cpu_side = fg.source_side()
    return {kern: CPU if node[kern] in cpu_side else GPU for kern in kernels}


# ------------------------------------------------------------ rewriting


def drop_transfers(block) -> None:
    for op in list(block.ops):
        if isinstance(op, k.TransferOp):
            op.result.replace_all_uses_with(op.input)
            Rewriter.erase_op(op)


def insert_transfers(block) -> None:
    """Route every cross-device operand through one transfer per value and destination.

    A transfer into a kernel's device sits just before that kernel (the
    copy's buffer lives no longer than needed); a graph output's transfer
    sits just after its producer (the producer's buffer is freed early, the
    copy lands in the caller's buffer).
    """
    where: dict[SSAValue, str | None] = {a: CPU for a in block.args}  # None: a constant, on every device
    moved: dict[tuple[SSAValue, str], SSAValue] = {}
    orphans: list[g.ReshapeOp] = []

    def on(v: SSAValue, dst: str, user: Operation) -> SSAValue:
        src = where[v]
        if src is None or src == dst:
            return v
        if (v, dst) not in moved:
            if isinstance(v.owner, g.ReshapeOp):
                source = on(v.owner.input, dst, user)
                new_op = g.ReshapeOp.make([source], [v.type])
                new_op.location = v.owner.location
                orphans.append(v.owner)
            else:
                source = v
                new_op = k.TransferOp(v, src, dst)
            early = isinstance(user, func.ReturnOp) and isinstance(source.owner, Operation)
            Rewriter.insert_op(new_op, InsertPoint.after(source.owner) if early else InsertPoint.before(user))
            where[new_op.results[0]] = dst
            moved[(v, dst)] = new_op.results[0]
        return moved[(v, dst)]

    for op in list(block.ops):
        if isinstance(op, g.ConstantOp):
            where[op.result] = None
        elif isinstance(op, g.ReshapeOp):
            where[op.result] = where[op.input]
        elif isinstance(op, k.FusedOp | func.ReturnOp):
            dev = op.device.data if isinstance(op, k.FusedOp) else CPU
            new = [on(v, dev, op) for v in op.operands]
            if new != list(op.operands):
                op.operands = new
            where.update((r, dev) for r in op.results)
    for r in reversed(orphans):  # views that only fed the other device
        if r.parent is not None and not r.result.uses:
            Rewriter.erase_op(r)


# ------------------------------------------------------------ the pass


@dataclass(frozen=True)
class PlaceDevicesPass(ModulePass):
    """Assign each kernel to "cpu" or "cuda:0" and insert kernel.transfer ops.

    Options: `gpu` (SM of the GPU, for its cost model), `overrides`
    ("NODE_OR_OP=cpu|gpu,..."), `shared_memory` (CPU and GPU share DRAM:
    transfers are nearly free; implied for integrated GPUs such as sm_87).
    """

    name = "place-devices"

    gpu: str = "sm_80"
    overrides: str = ""
    shared_memory: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        require(op, self.name, is_fused(op), "fused IR (run outline-kernels first)")
        if not re.fullmatch(r"sm_\d+a?", self.gpu):
            raise DscError(f"place-devices: gpu must name a CUDA SM such as sm_80, got '{self.gpu}'")
        block = main_func(op).body.block
        overrides = parse_overrides(self.overrides)
        drop_transfers(block)
        ops = list(block.ops)
        check_overrides([o for o in ops if isinstance(o, k.FusedOp)], overrides)
        gpu = GPU_MODELS.get(self.gpu.rstrip("a"), GPU_MODELS["sm_80"])  # sm_90a: the sm_90 part
        link = SHARED_DRAM if self.shared_memory or self.gpu in INTEGRATED_GPUS else PCIE
        for kern, dev in choose_devices(ops, gpu, link, overrides).items():
            kern.attributes["device"] = StringAttr(dev)
        insert_transfers(block)
