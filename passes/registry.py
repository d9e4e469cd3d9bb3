"""Every pass dsc knows, by command-line name (for pipelines and `dsc opt -p`).

Entries are imported lazily so `dsc opt -p canonicalize` does not load the
fusion or memory-planning code.
"""

from __future__ import annotations

import importlib

from xdsl.passes import ModulePass

# command-line name -> (module under dsc.passes, class name)
PASSES: dict[str, tuple[str, str]] = {
    "canonicalize": ("canonicalize", "CanonicalizePass"),
    "fold-constants": ("fold_constants", "FoldConstantsPass"),
    "cse": ("cse", "CsePass"),
    "dce": ("dce", "DcePass"),
    "fold-batchnorm": ("fold_batchnorm", "FoldBatchNormPass"),
    "lower-precision": ("lower_precision", "LowerPrecisionPass"),
    "fuse-conv-bn-relu": ("fuse_conv_bn_relu", "FuseConvBnReluPass"),
    "fuse-matmul-epilogue": ("fuse_matmul_epilogue", "FuseMatmulEpiloguePass"),
    "fuse-reductions": ("fuse_reductions", "FuseReductionsPass"),
    "fuse-elementwise": ("fuse_elementwise", "FuseElementwisePass"),
    "outline-kernels": ("outline_kernels", "OutlineKernelsPass"),
    "place-devices": ("place_devices", "PlaceDevicesPass"),
    "plan-memory": ("plan_memory", "PlanMemoryPass"),
}


def pass_class(name: str) -> type[ModulePass]:
    mod, cls = PASSES[name]
    return getattr(importlib.import_module(f"dsc.passes.{mod}"), cls)


def available_passes() -> dict:
    """{name: thunk returning the class}, the form xDSL's pipeline parser takes."""
    return {name: (lambda n=name: pass_class(n)) for name in PASSES}
