"""The .dsc artifact: one zip file with stored (uncompressed) members.

    manifest.json   format, dsc version, target (triple, CPU, required features),
                    inputs/outputs (name, shape, dtype), arena bytes, hashes of
                    every member and of the source model, the execution plan
    weights.bin     all constants, each 64-byte aligned, in the kernels' layouts
    cpu/<triple>.o  native object code exposing dsc_run (see backends/cpu/codegen.py)
    gpu/<sm>.ptx    CPU+GPU targets: PTX of the GPU kernels (see backends/cuda/codegen.py);
                    the manifest's "gpu" (SM, PTX ISA, device arena) and plan.schedule
                    (CPU segments, transfers, kernel launches) say how to run them
    gpu/emu-<arch>.o  optionally, the GPU kernels built for the CPU (runtime/gpu_emulator.py)

`read_artifact` refuses, with a message saying what to do, anything that is
not such a file, a truncated file, an altered member (hash mismatch), a newer
format; `preflight` refuses code for another architecture or a CPU that
lacks a required feature. Nothing native runs before both pass.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import zipfile
from dataclasses import dataclass

import numpy as np

from dsc.runtime.errors import ArtifactError, TargetError

FORMAT = "dsc-artifact"
FORMAT_VERSION = 2  # the newest this runtime reads: 1 CPU only, 2 adds GPU code and a schedule


@dataclass
class Artifact:
    path: str
    manifest: dict
    weights: bytes | memoryview  # weights.bin, 64-byte aligned in memory (one copy, read straight from the file)
    objects: dict[str, bytes]  # member name -> object code

    @property
    def cpu_object(self) -> bytes:
        return self.objects[self.manifest["code"]["cpu"]["member"]]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


WEIGHTS_ALIGN = 64  # the weights' base address: their tensors are laid out 64-byte aligned from it


def aligned_empty(nbytes: int, align: int = WEIGHTS_ALIGN) -> np.ndarray:
    """An uninitialized uint8 array of nbytes whose data address is a multiple of align."""
    raw = np.empty(nbytes + align, np.uint8)
    skip = -raw.ctypes.data % align
    return raw[skip : skip + nbytes]


def _read_stored(z: zipfile.ZipFile, source, name: str) -> memoryview | None:
    """A stored (uncompressed) member read straight into a 64-byte aligned buffer, or None.

    One copy of the data in memory: no bytes object from zipfile, no concatenated chunks."""
    info = z.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    n = info.file_size
    source.seek(info.header_offset)
    header = source.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"bad local header of {name}")
    name_len, extra_len = int.from_bytes(header[26:28], "little"), int.from_bytes(header[28:30], "little")
    source.seek(info.header_offset + 30 + name_len + extra_len)
    buf = aligned_empty(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = source.readinto(view[got:])
        if not k:
            raise zipfile.BadZipFile(f"member {name} is truncated")
        got += k
    return view


def read_artifact(path_or_bytes) -> Artifact:
    """Read and verify an artifact from a path or from its bytes."""
    if isinstance(path_or_bytes, bytes | bytearray | memoryview):
        path, source = "<in-memory artifact>", io.BytesIO(path_or_bytes)
    else:
        path = source = os.fspath(path_or_bytes)
        if not os.path.exists(path):
            raise ArtifactError(f"{path}: no such file", hint="compile one with `dsc compile model.onnx -o model.dsc`")
    if isinstance(source, str):
        source = open(source, "rb")  # noqa: SIM115 (closed below)
    try:
        with source, zipfile.ZipFile(source) as z:
            names = set(z.namelist())
            if "manifest.json" not in names:
                raise ArtifactError(f"{path}: not a dsc artifact (no manifest.json)", hint="compile the model with `dsc compile model.onnx -o model.dsc`")
            manifest = json.loads(z.read("manifest.json"))
            if manifest.get("format") != FORMAT:
                raise ArtifactError(f"{path}: not a dsc artifact (format {manifest.get('format')!r})")
            if manifest.get("format_version", 0) > FORMAT_VERSION:
                raise ArtifactError(
                    f"{path}: artifact format {manifest['format_version']} is newer than this runtime supports ({FORMAT_VERSION})",
                    hint="upgrade dsc, or recompile the model with this version",
                )
            members = {}
            for name, want in manifest["members"].items():
                if name not in names:
                    raise ArtifactError(f"{path}: member {name} is missing: the file is truncated or was altered", hint="recompile the model")
                data = _read_stored(z, source, name) if name == "weights.bin" else None
                if data is None:
                    data = z.read(name)
                if sha256(data) != want:
                    raise ArtifactError(f"{path}: member {name} does not match its hash: the file was altered or corrupted", hint="recompile the model or copy the file again")
                members[name] = data
    except zipfile.BadZipFile as e:
        raise ArtifactError(f"{path}: not a dsc artifact or truncated ({e})", hint="recompile the model or copy the file again") from None
    except (KeyError, ValueError) as e:
        raise ArtifactError(f"{path}: the manifest is malformed ({e})", hint="recompile the model") from None
    weights = members.pop("weights.bin", b"")
    return Artifact(path, manifest, weights, members)


_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def host_arch() -> str:
    m = platform.machine().lower()
    return _ARCH.get(m, m)


# /proc/cpuinfo "Features" names (Linux on ARM64) -> the LLVM feature names the manifest records.
# LLVM's own host detection maps only a few of them (asimd, fp, crc32, atomics, sve): without
# this table a Jetson would be told it lacks dotprod and fullfp16.
_CPUINFO_ARM64 = {"asimd": "neon", "fp": "fp-armv8", "asimddp": "dotprod", "asimdhp": "fullfp16", "fphp": "fullfp16", "atomics": "lse", "crc32": "crc", "asimdrdm": "rdm", "lrcpc": "rcpc", "sve": "sve", "sve2": "sve2", "i8mm": "i8mm", "bf16": "bf16"}


def arm64_features_from_cpuinfo(text: str) -> set[str]:
    """The LLVM feature names of a Linux ARM64 /proc/cpuinfo's Features line."""
    for line in text.splitlines():
        if line.startswith("Features"):
            return {_CPUINFO_ARM64[f] for f in line.partition(":")[2].split() if f in _CPUINFO_ARM64}
    return set()


def host_cpu_features() -> set[str]:
    """The CPU features of this machine, by LLVM's names (avx2, fma, neon, dotprod, fullfp16, ...)."""
    import llvmlite.binding as llvm

    have = {k for k, v in llvm.get_host_cpu_features().items() if v}
    if host_arch() == "aarch64":
        have.add("neon")  # Advanced SIMD is mandatory in ARMv8-A
        try:
            with open("/proc/cpuinfo") as f:
                have |= arm64_features_from_cpuinfo(f.read())
        except OSError:
            pass
    return have


# /proc/cpuinfo "flags" names (Linux on x86-64) -> LLVM's, where they differ
_CPUINFO_X86 = {"sse4_1": "sse4.1", "sse4_2": "sse4.2", "pclmulqdq": "pclmul", "bmi1": "bmi", "abm": "lzcnt"}


def x86_features_from_cpuinfo(text: str) -> set[str]:
    """The LLVM feature names of a Linux x86-64 /proc/cpuinfo's flags line (the names the manifest uses)."""
    for line in text.splitlines():
        if line.startswith("flags"):
            return {_CPUINFO_X86.get(f, f) for f in line.partition(":")[2].split()}
    return set()


def cpuinfo_features() -> set[str]:
    """The CPU features /proc/cpuinfo lists (LLVM's names), without loading LLVM; empty when it cannot tell.

    The kernel lists a feature only when the CPU has it and the OS enabled it (AVX state
    saving, for one), so a feature listed here is usable; one not listed may still be."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return set()
    arch = host_arch()
    if arch == "x86_64":
        return x86_features_from_cpuinfo(text)
    if arch == "aarch64":
        return arm64_features_from_cpuinfo(text) | {"neon"}
    return set()


_PORTABLE = {"x86_64": "--target x86-64-v3 or --target x86-64", "aarch64": "--target aarch64 (any ARMv8-A CPU)"}
_ARCH_TARGETS = {"x86_64": "host, x86-64, x86-64-v3 or x86-64-v4", "aarch64": "aarch64, cortex-a78ae or orin-cpu"}


def preflight(art: Artifact) -> None:
    """Refuse an artifact this machine cannot run, before any native code loads."""
    tgt = art.manifest["target"]
    arch = tgt["triple"].split("-")[0]
    here = host_arch()
    if arch != here:
        where = "an ARM64 machine (a Jetson, a Graviton or Ampere server, a Raspberry Pi 4/5 with a 64-bit OS)" if arch == "aarch64" else f"an {arch} machine"
        raise TargetError(
            f"{art.path} was compiled for {arch} (target '{tgt['name']}'), this machine is {here}: its native code cannot run here",
            hint=f"run the artifact on {where}, or recompile the model for this machine with `dsc compile MODEL --target host`"
            + (f" (targets for {here}: {_ARCH_TARGETS[here]})" if here in _ARCH_TARGETS else ""),
        )
    need = tgt.get("cpu_features", [])
    # /proc/cpuinfo says yes for the usual features, without loading LLVM (~40 MiB resident);
    # LLVM's host detection decides anything else
    if need and not set(need) <= cpuinfo_features():
        have = host_cpu_features()
        missing = [f for f in need if f not in have]
        if missing:
            raise TargetError(
                f"{art.path} needs CPU features this machine lacks: {', '.join(missing)} (target '{tgt['name']}')",
                hint=f"recompile with a portable target, e.g. {_PORTABLE.get(here, '--target host')}, or with --target host on this machine",
            )
