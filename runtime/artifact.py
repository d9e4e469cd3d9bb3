"""The .dsc artifact: one zip file with stored (uncompressed) members.

    manifest.json   format, dsc version, target (triple, CPU, required features),
                    inputs/outputs (name, shape, dtype), arena bytes, hashes of
                    every member and of the source model, the execution plan
    weights.bin     all constants, each 64-byte aligned, in the kernels' layouts
    cpu/<triple>.o  native object code exposing dsc_run (see backends/cpu/codegen.py)

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

from dsc.runtime.errors import ArtifactError, TargetError

FORMAT = "dsc-artifact"
FORMAT_VERSION = 1


@dataclass
class Artifact:
    path: str
    manifest: dict
    weights: bytes
    objects: dict[str, bytes]  # member name -> object code

    @property
    def cpu_object(self) -> bytes:
        return self.objects[self.manifest["code"]["cpu"]["member"]]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_artifact(path_or_bytes) -> Artifact:
    """Read and verify an artifact from a path or from its bytes."""
    if isinstance(path_or_bytes, bytes | bytearray | memoryview):
        path, source = "<in-memory artifact>", io.BytesIO(bytes(path_or_bytes))
    else:
        path = source = os.fspath(path_or_bytes)
        if not os.path.exists(path):
            raise ArtifactError(f"{path}: no such file", hint="compile one with `dsc compile model.onnx -o model.dsc`")
    try:
        with zipfile.ZipFile(source) as z:
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


def preflight(art: Artifact) -> None:
    """Refuse an artifact this machine cannot run, before any native code loads."""
    tgt = art.manifest["target"]
    arch = tgt["triple"].split("-")[0]
    here = host_arch()
    if arch != here:
        raise TargetError(
            f"{art.path} was compiled for {arch} (target '{tgt['name']}'), this machine is {here}",
            hint=f"recompile with `dsc compile MODEL --target host` on this machine, or run the artifact on an {arch} machine",
        )
    need = tgt.get("cpu_features", [])
    if need:
        import llvmlite.binding as llvm

        have = {k for k, v in llvm.get_host_cpu_features().items() if v}
        missing = [f for f in need if f not in have and not (f == "neon" and here == "aarch64")]
        if missing:
            raise TargetError(
                f"{art.path} needs CPU features this machine lacks: {', '.join(missing)} (target '{tgt['name']}')",
                hint="recompile with a portable target, e.g. --target x86-64-v3 or --target x86-64",
            )
