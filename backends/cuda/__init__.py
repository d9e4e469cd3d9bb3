"""The CUDA backend: GPU-placed kernels -> NVPTX (LLVM, through llvmlite) -> PTX text per SM."""
