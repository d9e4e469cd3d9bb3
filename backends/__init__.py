"""Code generators of dsc (cpu: llvmlite; cuda: PTX)."""
