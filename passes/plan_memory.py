"""plan-memory: give every intermediate tensor a byte offset in its device's arena.

Input: fused IR (`is_fused`), placed or not (a kernel whose `device` is ""
runs on the CPU). The schedule is the op order of @main.

Output: `offsets` on every kernel.fused and kernel.transfer (one per
result; -1 for a result that is a graph output), and on @main the arena size
of every device: `attributes {dsc.arena = {cpu = N : i64, "cuda:0" = M : i64}}`.

Guarantees:
* a buffer is live over [its defining op, its last use] (uses through
  graph.reshape views count: a view has no buffer, it extends its base's
  interval); two buffers of one device whose intervals overlap never share
  a byte, unless one is computed in place of the other (below);
* graph inputs, graph outputs (values @main returns, also through views)
  and constants (weights) stay out of the arenas;
* offsets are 64-byte aligned, sizes rounded up to 64 bytes;
* in-place: a pointwise kernel (every body op elementwise) writes a result
  over an input of the same element count and byte size that dies at that
  kernel; the two share one offset.

Offsets come from the greedy-by-size planner (TFLite, ONNX Runtime): buffers
sorted by size, largest first, each at the lowest offset (or in the tightest
gap) free of every buffer it overlaps in time; greedy-by-breadth is tried
too and the smallest arena wins. `memory_report` compares the arena with the
no-reuse sum and with the lower bound (the most bytes ever live at once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import DenseArrayBase, DictionaryAttr, IntegerAttr, ModuleOp, i64
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from dsc.dialects import graph as g
from dsc.dialects import kernel as k
from dsc.dialects.tensor_types import sig_of
from dsc.passes.base import is_fused, main_func, require

ALIGN = 64
ARENA_ATTR = "dsc.arena"

# ------------------------------------------------------------ analysis


def aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def nbytes(t) -> int:
    s = sig_of(t)
    return int(np.prod(s.shape, dtype=np.int64)) * s.dtype.itemsize


def numel(t) -> int:
    return int(np.prod(sig_of(t).shape, dtype=np.int64))


_NOT_POINTWISE = (g.SoftmaxOp, g.LogSoftmaxOp, g.LrnOp)
_POINTWISE = (g.UnaryOp, g.BinaryOp, g.WhereOp, g.CastOp, g.BatchNormOp, g.BroadcastToOp)


def is_pointwise(kernel: k.FusedOp) -> bool:
    """Element i of every result reads only element i of each full-size input.

    True when every body op is elementwise (broadcasting allowed; batch_norm
    is a per-channel affine map) and all results have one element count:
    nothing then combines two full-size values at different positions. The
    code generator loads element i of the inputs before it stores element i.
    """
    if len({numel(r.type) for r in kernel.outputs}) > 1:
        return False
    for op in kernel.body.block.ops:
        if isinstance(op, g.ConstantOp | g.ReshapeOp | k.YieldOp):
            continue
        if not isinstance(op, _POINTWISE) or isinstance(op, _NOT_POINTWISE):
            return False
    return True


def device_of(op: Operation) -> str:
    if isinstance(op, k.TransferOp):
        return op.dst.data
    return op.device.data or "cpu"


def base(v: SSAValue) -> SSAValue:
    """The buffer a value lives in: views (graph.reshape) resolve to their input."""
    while isinstance(v.owner, g.ReshapeOp):
        v = v.owner.input
    return v


@dataclass(eq=False)
class Buffer:
    """One kernel or transfer result: its device, size and live interval [start, end]."""

    value: SSAValue
    device: str
    size: int  # bytes, rounded up to ALIGN
    start: int
    end: int
    external: bool = False  # a graph output: its own buffer, outside the arena
    group: Group | None = None


@dataclass(eq=False)
class Group:
    """Buffers sharing one arena slot (an in-place chain); what the planner places."""

    members: list[Buffer]
    device: str
    offset: int = -1

    @property
    def size(self) -> int:
        return max(b.size for b in self.members)

    @property
    def start(self) -> int:
        return min(b.start for b in self.members)

    @property
    def end(self) -> int:
        return max(b.end for b in self.members)


@dataclass
class Liveness:
    buffers: dict[SSAValue, Buffer] = field(default_factory=dict)
    groups: list[Group] = field(default_factory=list)
    steps: int = 0

    def arena_buffers(self, device: str | None = None) -> list[Buffer]:
        return [b for b in self.buffers.values() if not b.external and (device is None or b.device == device)]

    def devices(self) -> list[str]:
        return sorted({"cpu", *(b.device for b in self.buffers.values())}, key=lambda d: (d != "cpu", d))


def liveness(fn: func.FuncOp) -> Liveness:
    """Buffers, live intervals and in-place groups of @main's schedule."""
    live = Liveness()
    ops = list(fn.body.block.ops)
    live.steps = len(ops)
    for i, op in enumerate(ops):
        if isinstance(op, g.ReshapeOp | g.ConstantOp):
            continue
        for v in op.operands:
            b = live.buffers.get(base(v))
            if b is not None:
                b.end = max(b.end, i)
                if isinstance(op, func.ReturnOp):
                    b.external = True
        if isinstance(op, k.FusedOp | k.TransferOp):
            for r in op.results:
                live.buffers[r] = Buffer(r, device_of(op), aligned(nbytes(r.type)), i, i)
    for b in live.arena_buffers():
        b.group = Group([b], b.device)
    for i, op in enumerate(ops):
        if isinstance(op, k.FusedOp) and is_pointwise(op):
            _fuse_in_place(op, i, live)
    live.groups = list({id(b.group): b.group for b in live.arena_buffers()}.values())
    return live


def _fuse_in_place(kernel: k.FusedOp, i: int, live: Liveness) -> None:
    taken: set[int] = set()
    for r in kernel.outputs:
        out = live.buffers[r]
        if out.external:
            continue
        for v in kernel.inputs:
            src = live.buffers.get(base(v))
            if src is None or src.external or id(src) in taken or src.end != i or src.device != out.device:
                continue
            if nbytes(v.type) != nbytes(r.type) or numel(v.type) != numel(r.type):
                continue
            taken.add(id(src))
            src.group.members.append(out)
            out.group = src.group
            break


# ------------------------------------------------------------ planning


def _overlaps(a: Group, b: Group) -> bool:
    return a.start <= b.end and b.start <= a.end


def _place(group: Group, placed: list[Group], best_fit: bool) -> int:
    """Lowest (first fit) or tightest (best fit) offset free of every time-overlapping group."""
    busy = sorted((p for p in placed if _overlaps(p, group)), key=lambda p: p.offset)
    size, top, best, best_gap = group.size, 0, None, None
    for p in busy:
        gap = p.offset - top
        if gap >= size:
            if not best_fit:
                return top
            if best_gap is None or gap < best_gap:
                best, best_gap = top, gap
        top = max(top, p.offset + p.size)
    return top if best is None else best


def greedy_by_size(groups: list[Group], best_fit: bool) -> dict[Group, int]:
    placed: list[Group] = []
    for grp in sorted(groups, key=lambda x: (-x.size, x.start)):
        grp.offset = _place(grp, placed, best_fit)
        placed.append(grp)
    return {grp: grp.offset for grp in groups}


def greedy_by_breadth(groups: list[Group], best_fit: bool = True) -> dict[Group, int]:
    """TFLite's other planner: visit steps by live bytes, largest first, and place their buffers."""
    steps: dict[int, list[Group]] = {}
    for grp in groups:
        for t in range(grp.start, grp.end + 1):
            steps.setdefault(t, []).append(grp)
    placed: list[Group] = []
    done: set[int] = set()
    for t in sorted(steps, key=lambda t: -sum(x.size for x in steps[t])):
        for grp in sorted(steps[t], key=lambda x: -x.size):
            if id(grp) not in done:
                grp.offset = _place(grp, placed, best_fit)
                placed.append(grp)
                done.add(id(grp))
    return {grp: grp.offset for grp in groups}


STRATEGIES: list[Callable[[list[Group]], dict[Group, int]]] = [
    lambda gs: greedy_by_size(gs, best_fit=False),
    lambda gs: greedy_by_size(gs, best_fit=True),
    lambda gs: greedy_by_breadth(gs),
]


def plan(live: Liveness) -> dict[str, int]:
    """Offsets for every group (set on the groups) and the arena size per device."""
    arenas = {}
    for dev in live.devices():
        groups = [grp for grp in live.groups if grp.device == dev]
        best, best_size = {}, None
        for strategy in STRATEGIES:
            offsets = strategy(groups)
            size = max((off + grp.size for grp, off in offsets.items()), default=0)
            if best_size is None or size < best_size:
                best, best_size = offsets, size
        for grp, off in best.items():
            grp.offset = off
        arenas[dev] = best_size or 0
    return arenas


def lower_bound(live: Liveness, device: str) -> int:
    """The most bytes of one device's arena live at one step: no plan can do better."""
    use = [0] * (live.steps + 1)
    for grp in live.groups:
        if grp.device == device:
            for t in range(grp.start, grp.end + 1):
                use[t] += grp.size
    return max(use, default=0)


# ------------------------------------------------------------ report


def memory_report(module: ModuleOp) -> dict[str, dict]:
    """Per device: arena bytes, no-reuse sum, lower bound and their ratios.

    Reads the arena sizes plan-memory recorded on @main; plans them (without
    changing the module) when it has not run. Also counts buffers, in-place
    pairs, and the bytes outside the arenas: weights the device's kernels read,
    and (CPU) graph inputs and outputs.
    """
    fn = main_func(module)
    live = liveness(fn)
    arenas = plan(live)
    recorded = fn.attributes.get(ARENA_ATTR)
    if isinstance(recorded, DictionaryAttr):
        arenas.update({d: a.value.data for d, a in recorded.data.items() if isinstance(a, IntegerAttr)})
    weights: dict[str, set] = {}
    for op in fn.body.block.ops:
        if isinstance(op, k.FusedOp):
            consts = {base(v).owner for v in op.inputs if isinstance(base(v).owner, g.ConstantOp)}
            weights.setdefault(device_of(op), set()).update(consts)
    io = sum(nbytes(a.type) for a in fn.body.block.args) + sum(nbytes(t) for t in fn.function_type.outputs.data)
    report = {}
    for dev in sorted(set(arenas) | set(live.devices()), key=lambda d: (d != "cpu", d)):
        bufs = live.arena_buffers(dev)
        no_reuse = sum(b.size for b in bufs)
        bound = lower_bound(live, dev)
        arena = arenas.get(dev, 0)
        report[dev] = {
            "arena": arena,
            "no_reuse": no_reuse,
            "lower_bound": bound,
            "arena_vs_no_reuse": arena / no_reuse if no_reuse else 1.0,
            "arena_vs_lower_bound": arena / bound if bound else 1.0,
            "buffers": len(bufs),
            "in_place": sum(len(grp.members) - 1 for grp in live.groups if grp.device == dev),
            "weights": sum(nbytes(c.result.type) for c in weights.get(dev, ())),
            "io": io if dev == "cpu" else 0,
        }
    return report


def _bytes(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def format_memory_report(report: dict[str, dict]) -> str:
    """The report as a table, one row per device."""
    cols = ("device", "arena", "no reuse", "lower bound", "arena/no-reuse", "arena/bound", "buffers", "in-place", "weights", "in+out")
    rows = [cols]
    for dev, r in report.items():
        rows.append((
            dev, _bytes(r["arena"]), _bytes(r["no_reuse"]), _bytes(r["lower_bound"]),
            f"{r['arena_vs_no_reuse']:.1%}" if r["no_reuse"] else "-",
            f"{r['arena_vs_lower_bound']:.3f}" if r["lower_bound"] else "-",
            str(r["buffers"]), str(r["in_place"]), _bytes(r["weights"]), _bytes(r["io"]),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


# ------------------------------------------------------------ the pass


@dataclass(frozen=True)
class PlanMemoryPass(ModulePass):
    """Assign arena offsets to kernel and transfer results; record arena sizes on @main."""

    name = "plan-memory"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        require(op, self.name, is_fused(op), "fused IR (run outline-kernels first)")
        fn = main_func(op)
        live = liveness(fn)
        arenas = plan(live)
        for o in fn.body.block.ops:
            if isinstance(o, k.FusedOp | k.TransferOp):
                offs = [-1 if (b := live.buffers[r]).external else b.group.offset for r in o.results]
                o.attributes["offsets"] = DenseArrayBase.from_list(i64, offs)
        fn.attributes[ARENA_ATTR] = DictionaryAttr({d: IntegerAttr(n, i64) for d, n in arenas.items()})
