"""fuse-conv-bn-relu: a convolution and its per-element epilogue become one kernel.

Input: @main in the graph dialect (kernels from earlier fusion passes may be
present); runs before placement.

Output: every top-level `graph.conv` is in a `kernel.fused` with the chain it
heads, each stage optional, in this order:

    conv → normalization → residual add → activation

* normalization: `graph.batch_norm` (when fold-batchnorm has not removed it),
  or the per-channel `mul` and/or `add` that fold-batchnorm leaves (the
  other operand varies only along the channel axis; a lone per-channel add is
  a bias);
* residual add: `graph.add` whose other operand is any tensor of the result's shape;
* activation: relu, clip, leaky_relu, sigmoid, hard_swish, hard_sigmoid, tanh,
  gelu, or SiLU written as x * sigmoid(x).

Pattern: "conv_add_relu" when a residual add was fused, else "conv_bn_relu"
when any stage was, else "conv". A stage joins only when the value it
consumes has that single use (SiLU: x's two uses are both in the kernel), so
nothing is computed twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsc.dialects import graph as g
from dsc.passes.fusion_utils import (
    ACTIVATIONS,
    is_channel_vector,
    num_uses,
    other_operand,
    outline_groups,
    shape,
    sole_user,
    users,
)
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

# ------------------------------------------------------------ patterns


def match_norm(v: SSAValue) -> list[Operation]:
    """batch_norm, or per-channel mul then add (either optional), consuming `v`."""
    u = sole_user(v)
    if isinstance(u, g.BatchNormOp) and u.input == v:
        return [u]
    ops = []
    if isinstance(u, g.MulOp) and (c := other_operand(u, v)) is not None and is_channel_vector(c, v) and shape(u.result) == shape(v):
        ops.append(u)
        v = u.result
        u = sole_user(v)
    if isinstance(u, g.AddOp) and (c := other_operand(u, v)) is not None and is_channel_vector(c, v) and shape(c) != shape(v) and shape(u.result) == shape(v):
        ops.append(u)
    return ops


def match_residual(v: SSAValue) -> list[Operation]:
    """add(v, r) with r of v's shape."""
    u = sole_user(v)
    if isinstance(u, g.AddOp) and (r := other_operand(u, v)) is not None and shape(r) == shape(v) == shape(u.result):
        return [u]
    return []


def match_silu(v: SSAValue) -> list[Operation]:
    """sigmoid(v) and mul(v, sigmoid(v)): v's two uses."""
    us = users(v)
    if len(us) != 2 or num_uses(v) != 2:
        return []
    s = next((u for u in us if isinstance(u, g.SigmoidOp)), None)
    m = next((u for u in us if isinstance(u, g.MulOp)), None)
    if s is None or m is None or sole_user(s.result) is not m or other_operand(m, v) != s.result:
        return []
    return [s, m]


def match_activation(v: SSAValue) -> list[Operation]:
    u = sole_user(v)
    if isinstance(u, ACTIVATIONS):
        return [u]
    return match_silu(v)


def match_conv(op: Operation) -> tuple[list[Operation], str] | None:
    """The conv's chain and its pattern name, or None when `op` is not a conv."""
    if not isinstance(op, g.ConvOp):
        return None
    group: list[Operation] = [op]
    stages = {}
    for stage in (match_norm, match_residual, match_activation):
        ops = stage(group[-1].results[0])
        stages[stage] = bool(ops)
        group += ops
    if stages[match_residual]:
        return group, "conv_add_relu"
    return group, "conv_bn_relu" if len(group) > 1 else "conv"


# ------------------------------------------------------------ pass


@dataclass(frozen=True)
class FuseConvBnReluPass(ModulePass):
    """Fuse each graph.conv with its normalization, residual add and activation."""

    name = "fuse-conv-bn-relu"
    device: str = "cpu"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        outline_groups(op, self.name, match_conv, self.device)
