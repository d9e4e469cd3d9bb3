#!/usr/bin/env bash
# Build an AArch64 Python 3.11 with numpy and llvmlite that runs under qemu-user on an x86
# Debian 12 machine, for tests/test_arm_qemu.py::test_python_runtime_on_arm64:
#
#     sudo tests/arm/arm64_python.sh /opt/dsc-arm64      # once (adds dpkg's arm64 architecture)
#     DSC_ARM64_PYTHON_DIR=/opt/dsc-arm64 make test
#
# DIR/root is a sysroot (Debian's arm64 python3.11-minimal, its stdlib and shared
# libraries, unpacked, not installed); DIR/site holds the manylinux aarch64 wheels of
# numpy and llvmlite, unpacked. Nothing is installed on the machine itself.
set -euo pipefail
DIR=${1:-/tmp/dsc-arm64-python}
LLVMLITE=$(python3 -c 'import llvmlite; print(llvmlite.__version__)' 2>/dev/null || echo "")
mkdir -p "$DIR/debs" "$DIR/root" "$DIR/site"
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
fi
apt-get update -qq
cd "$DIR/debs"
apt-get download -qq python3.11-minimal:arm64 libpython3.11-minimal:arm64 libpython3.11-stdlib:arm64 \
    libc6:arm64 libgcc-s1:arm64 libstdc++6:arm64 libffi8:arm64 zlib1g:arm64 libexpat1:arm64 \
    libbz2-1.0:arm64 liblzma5:arm64 libssl3:arm64
for f in *.deb; do dpkg -x "$f" "$DIR/root"; done
python3 -m pip download -q --only-binary=:all: --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
    --python-version 3.11 --implementation cp numpy "llvmlite${LLVMLITE:+==$LLVMLITE}" -d "$DIR/wheels"
for w in "$DIR"/wheels/*.whl; do python3 -m zipfile -e "$w" "$DIR/site"; done
qemu-aarch64 -L "$DIR/root" "$DIR/root/usr/bin/python3.11" -c \
    "import sys; sys.path.insert(0, '$DIR/site'); import platform, numpy, llvmlite.binding as l; print(platform.machine(), 'python', sys.version.split()[0], 'numpy', numpy.__version__, 'llvm triple', l.get_process_triple())"
echo "export DSC_ARM64_PYTHON_DIR=$DIR"
