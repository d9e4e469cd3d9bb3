"""Run a dsc artifact's AArch64 code under qemu-user, from an x86 machine.

The artifact's object code (member cpu/aarch64.o) is linked statically with
the C harness next to this file (`harness.c`, which calls the exported
`dsc_run_single`) by Debian's cross compiler, and the binary runs under
`qemu-aarch64` (a static binary needs no ARM sysroot):

    apt-get install -y qemu-user gcc-aarch64-linux-gnu

    from armrun import run_artifact
    outputs = run_artifact("model.dsc", {"input": x}, workdir)

On the command line (compiles an ONNX file or a zoo model for the target
first, and compares with onnxruntime on this machine):

    python tests/arm/armrun.py zoo:resnet18 --target cortex-a78ae
    python tests/arm/armrun.py model.onnx --target aarch64 --rtol 1e-4 --atol 1e-4
    python tests/arm/armrun.py model.dsc                  # random inputs, prints the outputs' stats

Only numpy and dsc.runtime (the artifact reader) are needed to run an
artifact; compiling and comparing need dsc and onnxruntime.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
HARNESS = HERE / "harness.c"
QEMU = os.environ.get("DSC_QEMU_AARCH64", "qemu-aarch64")
CC = os.environ.get("DSC_AARCH64_CC", "aarch64-linux-gnu-gcc")
NM = os.environ.get("DSC_AARCH64_NM", "aarch64-linux-gnu-nm")
OBJDUMP = os.environ.get("DSC_AARCH64_OBJDUMP", "aarch64-linux-gnu-objdump")
INSTALL_HINT = "install them with `apt-get install -y qemu-user gcc-aarch64-linux-gnu` (Debian/Ubuntu)"

# The oldest CPU qemu emulates that has every feature the target may use: code that
# strays beyond its target's ISA level traps here instead of passing by luck on `max`.
QEMU_CPU = {
    "aarch64": "cortex-a57",  # ARMv8.0-A + NEON: no LSE atomics, no dotprod, no fp16 arithmetic
    "cortex-a78ae": "neoverse-n1",  # ARMv8.2-A + dotprod + fp16, as the Cortex-A78AE
    "orin-cpu": "neoverse-n1",
    "orin": "neoverse-n1",
}


def missing_tools() -> str | None:
    """None when the cross toolchain and qemu are installed, else why not (a skip reason)."""
    missing = [t for t in (QEMU, CC) if shutil.which(t) is None]
    if missing:
        return f"{' and '.join(missing)} not found: {INSTALL_HINT}"
    return None


def _read(artifact):
    from dsc.runtime.artifact import read_artifact

    return artifact if hasattr(artifact, "manifest") else read_artifact(artifact)


def _feeds_in_order(manifest: dict, feeds: Mapping[str, object] | Sequence[object]) -> list[np.ndarray]:
    """The inputs in manifest order, with the manifest's dtype and shape (refused otherwise), contiguous."""
    specs = manifest["inputs"]
    if isinstance(feeds, Mapping):
        missing = [s["name"] for s in specs if s["name"] not in feeds]
        if missing:
            raise ValueError(f"missing inputs {missing}; the model takes {[s['name'] for s in specs]}")
        feeds = [feeds[s["name"]] for s in specs]
    out = []
    for s, x in zip(specs, feeds, strict=True):
        x = np.asarray(x)
        if list(x.shape) != list(s["shape"]):
            raise ValueError(f"input {s['name']}: shape {list(x.shape)}, the model takes {s['shape']}")
        out.append(np.ascontiguousarray(x, dtype=np.dtype(s["dtype"])))
    return out


def extract(artifact, feeds, workdir, arch: str = "aarch64") -> dict:
    """Write what the harness reads into `workdir`: model.o, weights.bin, in<i>.bin, io.txt. Returns the manifest."""
    art = _read(artifact)
    m = art.manifest
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    built_for = m["target"]["triple"].split("-")[0]
    if built_for != arch:
        raise ValueError(f"the artifact was compiled for {built_for} (target '{m['target']['name']}'), not {arch}")
    (work / "model.o").write_bytes(art.cpu_object)
    (work / "weights.bin").write_bytes(art.weights)
    lines = ["weights weights.bin", f"arena {max(int(m['arena_bytes']), 64)}"]
    for i, x in enumerate(_feeds_in_order(m, feeds)):
        (work / f"in{i}.bin").write_bytes(x.tobytes())
        lines.append(f"input in{i}.bin {x.nbytes}")
    for j, s in enumerate(m["outputs"]):
        nbytes = int(np.prod(s["shape"], dtype=np.int64)) * np.dtype(s["dtype"]).itemsize
        lines.append(f"output out{j}.bin {nbytes}")
    (work / "io.txt").write_text("\n".join(lines) + "\n")
    return m


def build(workdir, cc: str = CC) -> Path:
    """Cross-compile the harness and link the model's object into a static AArch64 binary `run`."""
    work = Path(workdir)
    exe = work / "run"
    cmd = [cc, "-O2", "-static", str(HARNESS), str(work / "model.o"), "-lm", "-o", str(exe)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"linking the harness failed ({' '.join(cmd)}):\n{r.stderr}")
    return exe


def run(workdir, manifest: dict, inputs: list[np.ndarray] | None = None, qemu_cpu: str | None = None, timeout: float = 900, native: bool = False) -> list[np.ndarray]:
    """Run the built harness under qemu-aarch64 (or directly, `native`); returns the outputs in manifest order."""
    work = Path(workdir)
    cpu = qemu_cpu or QEMU_CPU.get(manifest["target"]["name"], "max")
    cmd = ["./run", "io.txt"] if native else [QEMU, "-cpu", cpu, "./run", "io.txt"]
    r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} (in {work}) exited with {r.returncode}:\n{r.stdout}{r.stderr}")
    outs = []
    for j, s in enumerate(manifest["outputs"]):
        outs.append(np.fromfile(work / f"out{j}.bin", dtype=np.dtype(s["dtype"])).reshape(s["shape"]))
    # an output that is a copy of an input, a weight or another output is not written by
    # dsc_run_single: the host copies it, as dsc.runtime's Session does
    weights = None
    for j, src in enumerate(manifest["plan"]["output_sources"]):
        if src is None:
            continue
        dt, shape = np.dtype(src["dtype"]), tuple(src["shape"])
        if src["kind"] == "input":
            outs[j][...] = inputs[src["index"]].reshape(shape)
        elif src["kind"] == "output":
            outs[j][...] = outs[src["index"]].reshape(shape)
        else:
            weights = weights if weights is not None else (work / "weights.bin").read_bytes()
            n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            outs[j][...] = np.frombuffer(weights[src["index"] : src["index"] + n], dt).reshape(shape)
    return outs


def run_artifact(artifact, feeds, workdir, qemu_cpu: str | None = None, timeout: float = 900) -> list[np.ndarray]:
    """extract + build + run: the artifact's AArch64 code on `feeds`, under qemu."""
    art = _read(artifact)
    extract(art, feeds, workdir)
    build(workdir)
    return run(workdir, art.manifest, _feeds_in_order(art.manifest, feeds), qemu_cpu, timeout)


def undefined_symbols(obj_path) -> list[str]:
    """Symbols the object needs from libc/libm (what the static link must resolve)."""
    r = subprocess.run([NM, "-u", str(obj_path)], capture_output=True, text=True, check=True)
    return sorted(line.split()[-1] for line in r.stdout.splitlines() if line.strip())


def disassemble(obj_path) -> str:
    return subprocess.run([OBJDUMP, "-d", "--no-show-raw-insn", str(obj_path)], capture_output=True, text=True, check=True).stdout


def _random_feeds(manifest: dict, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for s in manifest["inputs"]:
        dt = np.dtype(s["dtype"])
        feeds[s["name"]] = rng.standard_normal(s["shape"]).astype(dt) if dt.kind == "f" else np.zeros(s["shape"], dt)
    return feeds


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    p = argparse.ArgumentParser(description="Run a model's AArch64 code under qemu-aarch64 (and compare with onnxruntime).")
    p.add_argument("model", help="a .dsc artifact, an .onnx model, or zoo:NAME (the small zoo variant)")
    p.add_argument("--target", default="cortex-a78ae", help="ARM target to compile an ONNX model for (aarch64, cortex-a78ae, orin-cpu)")
    p.add_argument("--qemu-cpu", help="qemu's -cpu (default: the oldest CPU with the target's features)")
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep the files (object, binary, io.txt, .bin)")
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--atol", type=float, default=1e-4)
    args = p.parse_args(argv)
    reason = missing_tools()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    model = feeds = None
    if args.model.endswith(".dsc"):
        artifact = args.model
        feeds = _random_feeds(_read(artifact).manifest)
    else:
        import onnx

        import dsc
        from dsc.tools import zoo

        model = zoo.build(args.model[4:], small=True) if args.model.startswith("zoo:") else onnx.load(args.model)
        artifact = dsc.compile(model, target=args.target)
        feeds = zoo.example_inputs(model)
    work = args.keep or tempfile.mkdtemp(prefix="dsc-arm-")
    outs = run_artifact(artifact, feeds, work, args.qemu_cpu)
    m = _read(artifact).manifest
    bad = 0
    if model is not None:
        import onnxruntime as ort

        ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
        for s, o, r in zip(m["outputs"], outs, ref):
            err = float(np.max(np.abs(o.astype(np.float64) - r))) if o.size else 0.0
            ok = np.allclose(o, r, rtol=args.rtol, atol=args.atol)
            bad += not ok
            print(f"{s['name']}: max |qemu-aarch64 - onnxruntime| = {err:.3g}  {'OK' if ok else 'MISMATCH'}")
    else:
        for s, o in zip(m["outputs"], outs):
            print(f"{s['name']}: {o.dtype} {list(o.shape)} min {o.min():.4g} max {o.max():.4g} mean {o.mean():.4g}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
