"""The CPU backend: kernel IR -> LLVM IR (llvmlite) -> native object code for x86-64 and AArch64."""
