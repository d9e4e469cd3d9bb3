"""outline-kernels: every compute op still outside a kernel becomes a kernel of its own.

Input: @main after the fusion passes (or any graph-dialect @main); runs
before placement.

Output: each top-level op other than `graph.constant`, `graph.reshape` (a
view), `kernel.*` and `func.return` is wrapped in its own `kernel.fused`
with pattern "single" (a `graph.if` moves in whole, its captured values
becoming kernel inputs). Then all kernels are renamed `k<i>_<pattern>` in
program order.

Guarantees: `is_fused(module)` holds afterwards, which placement, memory
planning and codegen require.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsc.dialects import kernel as k
from dsc.passes.base import is_fused
from dsc.passes.fusion_utils import is_compute, main_block, outline, require_unplaced
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.passes import ModulePass

# ------------------------------------------------------------ renaming


def renumber_kernels(module: ModuleOp) -> None:
    """Name the kernels of @main k0_<pattern>, k1_<pattern>, ... in program order."""
    kernels = [op for op in main_block(module).ops if isinstance(op, k.FusedOp)]
    for i, op in enumerate(kernels):
        op.attributes["sym_name"] = StringAttr(f"k{i}_{op.pattern.data}")


# ------------------------------------------------------------ pass


@dataclass(frozen=True)
class OutlineKernelsPass(ModulePass):
    """Wrap each remaining compute op of @main in its own kernel.fused ("single")."""

    name = "outline-kernels"
    device: str = "cpu"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        require_unplaced(op, self.name)
        block = main_block(op)
        for inner in list(block.ops):
            if is_compute(inner):
                outline([inner], "single", self.device)
        renumber_kernels(op)
        assert is_fused(op), "outline-kernels left a compute op outside a kernel"
