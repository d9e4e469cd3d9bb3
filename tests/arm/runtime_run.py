"""Run an artifact with dsc.runtime on this machine: `python runtime_run.py MODEL.dsc FEEDS.npz OUT.npz [THREADS]`.

The ARM64 tests run it with an AArch64 Python under qemu-user (see
arm64_python.sh): it needs only numpy, llvmlite and dsc's runtime, and shows
that an ARM artifact loads and runs (MCJIT, threads, barrier) on an ARM64
machine exactly as on x86. Prints the platform and the outputs' names.
"""

import platform
import sys

import numpy as np

import dsc.runtime


def main(argv: list[str]) -> int:
    model, feeds_path, out_path = argv[:3]
    threads = int(argv[3]) if len(argv) > 3 else None
    sess = dsc.runtime.load(model, num_threads=threads)
    feeds = dict(np.load(feeds_path))
    outs = sess.run(None, feeds)
    np.savez(out_path, **{a.name: o for a, o in zip(sess.get_outputs(), outs)})
    print(f"{platform.machine()}: ran {model} on {sess.num_threads} thread(s): {[a.name for a in sess.get_outputs()]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
