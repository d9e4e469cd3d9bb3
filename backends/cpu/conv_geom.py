"""Convolution geometry for the CPU backend: a graph.conv's shapes and attributes as one
record (ConvGeom), which every conv emitter (emit_conv, emit_conv_cl, emit_depthwise,
emit_winograd) reads, and the output's epilogue Layout.

1-D convs (NCW) are treated as 2-D with H = 1. `ConvGeom.mode` names how the
pixel-lanes path (emit_conv.py) reads the im2col columns: "direct", "taps" or "packed".
"""

from __future__ import annotations

from dataclasses import dataclass

from dsc.backends.cpu.epilogue import Layout
from dsc.dialects import graph as g
from dsc.dialects.tensor_types import sig_of


@dataclass(frozen=True)
class ConvGeom:
    N: int
    C: int
    H: int
    W: int
    M: int
    G: int
    KH: int
    KW: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pl: int
    OH: int
    OW: int

    @property
    def cg(self) -> int:
        return self.C // self.G

    @property
    def mg(self) -> int:
        return self.M // self.G

    @property
    def T(self) -> int:
        return self.KH * self.KW

    @property
    def P(self) -> int:
        return self.OH * self.OW

    @property
    def HW(self) -> int:
        return self.H * self.W

    @property
    def depthwise(self) -> bool:
        return self.cg == 1 and self.G > 1

    @property
    def mode(self) -> str:
        if self.KH == self.KW == 1 and self.sh == self.sw == 1 and self.pt == self.pl == 0 and self.OH == self.H and self.OW == self.W:
            return "direct"
        if self.sh == self.sw == 1 and self.OW == self.W and self.T <= 9:  # bigger kernels: too many taps to unroll
            return "taps"
        return "packed"


def conv_geom(op: g.ConvOp) -> ConvGeom | None:
    x = sig_of(op.input.type).shape
    w = sig_of(op.weight.type).shape
    y = sig_of(op.result.type).shape
    a = op.py_attrs()
    if len(x) == 4:
        (kh, kw), (sh, sw), (dh, dw) = w[2:], a["strides"], a["dilations"]
        pt, pl = a["pads"][0], a["pads"][1]
        return ConvGeom(x[0], x[1], x[2], x[3], w[0], a["group"], kh, kw, sh, sw, dh, dw, pt, pl, y[2], y[3])
    if len(x) == 3:
        return ConvGeom(x[0], x[1], 1, x[2], w[0], a["group"], 1, w[2], 1, a["strides"][0], 1, a["dilations"][0], 0, a["pads"][0], 1, y[2])
    return None


def conv_layout(op: g.ConvOp) -> Layout:
    shape = sig_of(op.result.type).shape
    return Layout(shape, "br" + "c" * (len(shape) - 2))


__all__ = ["ConvGeom", "conv_geom", "conv_layout"]
