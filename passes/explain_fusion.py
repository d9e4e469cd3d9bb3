"""Why each ONNX node landed where it did: `explain_fusion` and its table.

Computed on demand from fused IR (nothing is stored in the IR): every op of
@main, or of a kernel body, is traced to its ONNX node through its location;
each dataflow edge that crosses a kernel boundary is classified with the
predicates the fusion passes use. One row per node:

    node     ONNX node name
    op       the graph op(s) it became
    kernel   sym_name of its kernel ("" for constants and views)
    pattern  that kernel's pattern
    status   "fused" (kernel shared with other nodes), "alone" (a kernel of
             its own), "outside" (a constant or view between kernels), "removed"
             (given in `onnx_nodes` but absent from the IR: folded or dead)
    reason   "fused", or the code of why it was not fused with its neighbour:
             constant, view, multiple-uses, shape-mismatch, not-elementwise,
             different-device, cycle, no-pattern, no-neighbour, removed,
             not-outlined (a compute op outside any kernel: fusion not run yet)
    detail   one sentence

For a fused node whose result leaves its kernel, `detail` also says why
the kernel stopped there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dsc.dialects import graph as g
from dsc.dialects import kernel as k
from dsc.passes.fusion_utils import (
    MATMULS,
    REDUCTIONS,
    is_elementwise,
    main_block,
    node_names,
    shape,
)
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, SSAValue


@dataclass
class _Edge:
    producer: Operation  # an op of @main or of a kernel body
    consumer: Operation
    uses: int  # consumers of the value, counted through kernel boundaries
    value: SSAValue  # the value at the producer's side


class _Graph:
    """Node-level dataflow of fused IR: kernel bodies seen through their boundaries."""

    def __init__(self, block: Block):
        self.block = block
        self.kernel_of: dict[Operation, k.FusedOp] = {}
        for top in block.ops:
            if isinstance(top, k.FusedOp):
                for op in top.body.block.ops:
                    if not isinstance(op, k.YieldOp):
                        for inner in op.walk():
                            self.kernel_of[inner] = top

    def unit(self, op: Operation) -> Operation:
        return self.kernel_of.get(op, op)

    def consumers(self, v: SSAValue) -> list[Operation]:
        """The graph ops reading `v`, following kernel results and kernel inputs."""
        out = []
        for use in v.uses:
            u = use.operation
            if isinstance(u, k.YieldOp):  # leaves a kernel: follow the kernel result
                out += self.consumers(u.parent_op().outputs[use.index])
            elif isinstance(u, k.FusedOp):  # enters a kernel: follow the block argument
                out += self.consumers(u.body.block.args[use.index])
            elif isinstance(u, k.TransferOp):
                out += self.consumers(u.result)
            elif not isinstance(u, func.ReturnOp):
                out.append(u)
        return out

    def producer(self, v: SSAValue) -> Operation | None:
        """The graph op computing `v` (None for a graph input), through kernels."""
        owner = v.owner
        if isinstance(owner, Block):
            parent = owner.parent_op()
            if isinstance(parent, k.FusedOp):
                return self.producer(parent.inputs[v.index])
            return None
        if isinstance(owner, k.FusedOp):
            return self.producer(owner.body.block.last_op.operands[v.index])
        if isinstance(owner, k.TransferOp):
            return self.producer(owner.input)
        return owner

    def out_edges(self, op: Operation) -> list[_Edge]:
        return [_Edge(op, c, len(cs), r) for r in op.results for cs in [self.consumers(r)] for c in cs if self.unit(c) is not self.unit(op)]

    def in_edges(self, op: Operation) -> list[_Edge]:
        out = []
        for v in op.operands:
            p = self.producer(v)
            if p is not None and self.unit(p) is not self.unit(op):
                out += [e for e in self.out_edges(p) if e.consumer is op]
        return out

    def reaches(self, src: Operation, dst: Operation, skip_direct: bool) -> bool:
        """True when unit `dst` is reachable from unit `src` through another unit."""
        start = [n for r in src.results for use in r.uses for n in [self.block.find_ancestor_op_in_block(use.operation)] if n is not None]
        seen, todo = set(), [n for n in start if not (skip_direct and n is dst)]
        while todo:
            n = todo.pop()
            if n is dst:
                return True
            if n in seen:
                continue
            seen.add(n)
            todo += [u for r in n.results for use in r.uses for u in [self.block.find_ancestor_op_in_block(use.operation)] if u is not None]
        return False


def _name(op: Operation) -> str:
    names = node_names(op)
    return f"{op.name} ({names[0]})" if names else op.name


def classify(gr: _Graph, e: _Edge) -> tuple[str, str]:
    """(reason code, sentence) for a producer -> consumer edge that crosses a kernel boundary."""
    p, c = e.producer, e.consumer
    pu, cu = gr.unit(p), gr.unit(c)
    if isinstance(p, g.ConstantOp):
        return "constant", f"{_name(p)} is a constant: constants stay outside kernels and are passed in as inputs"
    if isinstance(p, g.ReshapeOp) or isinstance(c, g.ReshapeOp):
        view = p if isinstance(p, g.ReshapeOp) else c
        return "view", f"{_name(view)} is a view (no copy): it stays between kernels"
    if e.uses > 1:
        return "multiple-uses", f"the result of {_name(p)} has {e.uses} uses: fusing it into one consumer would compute it twice"
    if isinstance(pu, k.FusedOp) and isinstance(cu, k.FusedOp) and pu.device.data != cu.device.data:
        return "different-device", f"{_name(p)} runs on {pu.device.data or '?'}, {_name(c)} on {cu.device.data or '?'}"
    absorbs = is_elementwise(c) or isinstance(c, REDUCTIONS) or (isinstance(c, MATMULS) and isinstance(p, g.TransposeOp))
    if absorbs and not isinstance(c, MATMULS) and (is_elementwise(p) or isinstance(p, (g.ConvOp, *REDUCTIONS, *MATMULS))) and _space(c) != shape(e.value):
        return "shape-mismatch", f"{_name(c)} iterates over {'x'.join(map(str, _space(c)))}, {_name(p)} produces {_shape(e.value)}: different iteration spaces"
    if not absorbs:
        return "not-elementwise", f"{_name(c)} is not elementwise: no pattern fuses it after {_name(p)}"
    if not (is_elementwise(p) or isinstance(p, (g.ConvOp, g.TransposeOp, *REDUCTIONS, *MATMULS))):
        return "not-elementwise", f"{_name(p)} is not elementwise: no pattern fuses it with {_name(c)}"
    if gr.reaches(pu, cu, skip_direct=True):
        return "cycle", f"another kernel lies on a path from {_name(p)} to {_name(c)}: fusing them would create a cycle"
    where = f" (in {pu.sym_name.data} and {cu.sym_name.data})" if isinstance(pu, k.FusedOp) and isinstance(cu, k.FusedOp) else ""
    return "no-pattern", f"no fusion pattern joins {_name(p)} and {_name(c)}{where}"


# The most telling reason first when a lone node has several neighbours.
_RANK = ["multiple-uses", "not-elementwise", "shape-mismatch", "cycle", "different-device", "no-pattern", "view", "constant"]


def _most_telling(gr: _Graph, edges: list[_Edge]) -> tuple[str, str]:
    return min((classify(gr, e) for e in edges), key=lambda cd: _RANK.index(cd[0]))


def _space(op: Operation) -> tuple[int, ...]:
    """The iteration space a kernel starting at `op` would share with its producers."""
    return shape(op.operands[0]) if isinstance(op, REDUCTIONS) else shape(op.results[0])


def _shape(v: SSAValue) -> str:
    return "x".join(map(str, shape(v))) or "scalar"


def explain_fusion(module: ModuleOp, onnx_nodes: Sequence[str] | None = None) -> list[dict]:
    """One row per ONNX node (see the module docstring); `onnx_nodes` adds rows for nodes the IR lost."""
    block = main_block(module)
    gr = _Graph(block)
    ops_of: dict[str, list[Operation]] = {}
    for top in block.ops:
        for op in top.walk():
            for n in node_names(op):
                ops_of.setdefault(n, [])
                if op not in ops_of[n]:
                    ops_of[n].append(op)
    rows = [_row(gr, n, ops) for n, ops in ops_of.items()]
    for n in onnx_nodes or ():
        if n not in ops_of:
            rows.append({"node": n, "op": "", "kernel": "", "pattern": "", "status": "removed", "reason": "removed",
                         "detail": "not in the IR: folded into another op, constant-folded, or dead before fusion"})
    return rows


def _row(gr: _Graph, node: str, ops: list[Operation]) -> dict:
    kernels = list(dict.fromkeys(gr.kernel_of[op] for op in ops if op in gr.kernel_of))
    row = {"node": node, "op": ", ".join(dict.fromkeys(op.name for op in ops)), "kernel": ", ".join(kr.sym_name.data for kr in kernels),
           "pattern": ", ".join(dict.fromkeys(kr.pattern.data for kr in kernels))}
    compute = [op for op in ops if not isinstance(op, k.FusedOp | func.ReturnOp)]
    out_edges = [e for op in compute for e in gr.out_edges(op)]
    in_edges = [e for op in compute for e in gr.in_edges(op)]
    if not kernels:
        top = compute[0] if compute else ops[0]
        code = "constant" if isinstance(top, g.ConstantOp) else "view" if isinstance(top, g.ReshapeOp) else "not-outlined"
        detail = {"constant": "a constant: it stays outside kernels and is passed in as an input",
                  "view": "a view (no copy): it stays between kernels", "not-outlined": f"{top.name} is not in a kernel yet (run outline-kernels)"}[code]
        return row | {"status": "outside", "reason": code, "detail": detail}
    partners = [n for kr in kernels for n in kr.source_names if n != node]
    if partners:
        detail = f"fused with {len(partners)} other node(s) in {row['kernel']}: {', '.join(partners[:3])}{', ...' if len(partners) > 3 else ''}"
        if out_edges:
            detail += f"; the kernel ends here: {_most_telling(gr, out_edges)[1]}"
        return row | {"status": "fused", "reason": "fused", "detail": detail}
    edges = [e for e in out_edges + in_edges if not isinstance(e.producer, g.ConstantOp)]
    if not edges:
        return row | {"status": "alone", "reason": "no-neighbour", "detail": "its operands are graph inputs or constants and its results graph outputs"}
    code, detail = _most_telling(gr, edges)
    return row | {"status": "alone", "reason": code, "detail": detail}


def format_explanation(rows: list[dict]) -> str:
    """`explain_fusion` rows as an aligned table, with a summary line."""
    width = min(max([len(r["node"]) for r in rows] + [4]), 60)
    cols = [("node", width), ("op", 22), ("kernel", 24), ("reason", 16)]

    def cut(s: str, w: int, left: bool = False) -> str:  # node names keep their distinctive end
        if len(s) <= w:
            return s
        return "..." + s[len(s) - w + 3 :] if left else s[: w - 3] + "..."

    lines = ["  ".join(f"{c:<{w}}" for c, w in cols) + "  detail"]
    for r in rows:
        lines.append("  ".join(f"{cut(r[c], w, c == 'node'):<{w}}" for c, w in cols) + "  " + r["detail"])
    counts = {s: sum(r["status"] == s for r in rows) for s in ("fused", "alone", "outside", "removed")}
    kernels = len({r["kernel"] for r in rows if r["kernel"]})
    lines.append(f"{len(rows)} nodes, {kernels} kernels: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return "\n".join(lines)
