"""Writing the .dsc artifact (the format is described in dsc/runtime/artifact.py).

The file is reproducible: members in a fixed order, fixed timestamps and
permissions, no compression, JSON with sorted keys; the same model, target
and options give a byte-identical file.
"""

from __future__ import annotations

import io
import json
import zipfile

from dsc import __version__
from dsc.backends.cpu.codegen import BufRef, NativeProgram
from dsc.backends.cpu.target import CpuTarget
from dsc.runtime.artifact import FORMAT, sha256

CPU_FORMAT_VERSION = 1  # CPU-only artifacts stay readable by runtimes that predate GPU code
GPU_FORMAT_VERSION = 2  # + gpu/<sm>.ptx, manifest "gpu" and plan.schedule


def _spec(name: str, ref: BufRef) -> dict:
    return {"name": name, "shape": list(ref.shape), "dtype": str(ref.dtype)}


def _ref(ref: BufRef | None) -> dict | None:
    if ref is None:
        return None
    return {"kind": ref.kind, "index": ref.index, "dtype": str(ref.dtype), "shape": list(ref.shape)}


def build_artifact(
    prog: NativeProgram,
    cpu: CpuTarget,
    target_name: str,
    input_names: list[str],
    output_names: list[str],
    source_hash: str | None,
    options: dict,
    gpu=None,
    segments: list[str] | None = None,
) -> bytes:
    """The artifact's bytes; `gpu` (a dsc.backends.cuda.codegen.GpuProgram) for CPU+GPU targets."""
    arch = cpu.triple.split("-")[0]
    obj_member = f"cpu/{arch}.o"
    members = {"weights.bin": prog.weights, obj_member: prog.object_code}
    manifest = {
        "format": FORMAT,
        "format_version": CPU_FORMAT_VERSION if gpu is None else GPU_FORMAT_VERSION,
        "dsc_version": __version__,
        "target": {"name": target_name, "triple": cpu.triple, "cpu": cpu.cpu, "cpu_features": cpu.required_features(), "vector_width": cpu.vector_width},
        "inputs": [_spec(n, r) for n, r in zip(input_names, prog.inputs)],
        "outputs": [_spec(n, r) for n, r in zip(output_names, prog.outputs)],
        "arena_bytes": prog.arena_bytes,
        "weights": {"bytes": len(prog.weights), "sha256": sha256(prog.weights)},
        "source_model_sha256": source_hash,
        "options": options,
        "code": {"cpu": {"member": obj_member, "entry": "dsc_run", "bytes": len(prog.object_code)}},
        "plan": {
            "steps": [s.label for s in prog.steps],
            "output_sources": [_ref(r) for r in prog.output_sources],
        },
    }
    if prog.profile_offset is not None:
        manifest["plan"]["profile_offset"] = prog.profile_offset
    if gpu is not None:
        ptx_member = f"gpu/{gpu.sm}.ptx"
        members[ptx_member] = gpu.ptx.encode()
        manifest["target"].update({"sm": gpu.sm, "ptx_isa": gpu.ptx_isa})
        manifest["gpu"] = {
            "sm": gpu.sm,
            "ptx_isa": gpu.ptx_isa,
            "min_driver": gpu.min_driver,
            "member": ptx_member,
            "arena_bytes": gpu.arena_bytes,
            "kernels": len(gpu.kernels),
            "emulation": None,
        }
        if gpu.emu_object is not None:
            emu_member = f"gpu/emu-{arch}.o"
            members[emu_member] = gpu.emu_object
            manifest["gpu"]["emulation"] = emu_member
        manifest["code"]["cpu"]["entries"] = list(segments or [])
        manifest["plan"]["schedule"] = gpu.schedule
    manifest["members"] = {name: sha256(data) for name, data in members.items()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in [("manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode())] + sorted(members.items()):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, data)
    return buf.getvalue()
