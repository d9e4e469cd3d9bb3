"""Loading native object code and running it on all cores.

No C compiler or linker on the machine. On x86-64 Linux the object (an ELF
relocatable file, as dsc's CPU backend writes it: code, constants, a few
calls into libc) is loaded by `ElfImage` below: its sections copied into one
anonymous mapping, relocated, made read-only and executable. That keeps LLVM
out of the process: loading llvmlite's shared library alone costs ~40 MiB of
resident memory, more than a small model's weights. Anything the loader does
not know (another architecture, a relocation or section kind it does not
handle, an unresolved symbol) goes to llvmlite's MCJIT (`add_object_file`)
instead, as does every object when DSC_LOADER=mcjit (with DSC_LOADER=elf the
loader's refusal is raised instead: for tests).

N-1 worker threads each make one ctypes call,
`dsc_worker(ctl, tid)`, and stay parked in native code (ctypes releases the
GIL); an inference is one call, `dsc_dispatch`, which hands the job to the
workers, runs thread 0's share and returns when all are done. The steps of
`dsc_run` synchronize with the generated code's own barrier. See
backends/cpu/workers.py.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys
import threading
import weakref

import numpy as np

_RUN = ctypes.CFUNCTYPE(
    None,
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_int64,
    ctypes.c_void_p,
)
_DISPATCH = ctypes.CFUNCTYPE(
    None,
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
)
_WORKER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)
_STOP = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_llvm_lock = threading.Lock()
_llvm_ready = False


def _init_llvm(llvm) -> None:
    global _llvm_ready
    with _llvm_lock:
        if not _llvm_ready:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            _llvm_ready = True


class Unsupported(Exception):
    """The object needs something ElfImage does not do (then MCJIT loads it)."""


_PROT_READ, _PROT_WRITE, _PROT_EXEC = 1, 2, 4
_MAP_PRIVATE, _MAP_ANONYMOUS = 0x02, 0x20
_PAGE = 4096
_libc = None


def _libc_fns():
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.mprotect.restype = ctypes.c_int
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        libc.munmap.restype = ctypes.c_int
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        _libc = libc
    return _libc


def _external(name: str) -> int:
    """The address of a symbol the process already has (libc, libm), or 0."""
    for lib in (None, "libm.so.6"):
        try:
            return ctypes.cast(getattr(ctypes.CDLL(lib), name), ctypes.c_void_p).value or 0
        except (AttributeError, OSError):
            continue
    return 0


def _align_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


# ELF constants (the x86-64 psABI)
_SHT_PROGBITS, _SHT_SYMTAB, _SHT_RELA, _SHT_NOBITS, _SHT_REL = 1, 2, 4, 8, 9
_SHT_INIT_ARRAY, _SHT_FINI_ARRAY, _SHT_PREINIT_ARRAY = 14, 15, 16
_SHT_X86_64_UNWIND = 0x70000001
_SHF_WRITE, _SHF_ALLOC, _SHF_EXECINSTR, _SHF_TLS = 0x1, 0x2, 0x4, 0x400
_SHN_UNDEF, _SHN_ABS, _SHN_COMMON, _SHN_LORESERVE = 0, 0xFFF1, 0xFFF2, 0xFF00
_R_X86_64_64, _R_X86_64_PC32, _R_X86_64_PLT32, _R_X86_64_GOTPCREL = 1, 2, 4, 9
_R_X86_64_32, _R_X86_64_32S, _R_X86_64_PC64 = 10, 11, 24
_R_X86_64_GOTPCRELX, _R_X86_64_REX_GOTPCRELX = 41, 42
_GOT_RELOCS = (_R_X86_64_GOTPCREL, _R_X86_64_GOTPCRELX, _R_X86_64_REX_GOTPCRELX)


def native_loader_available() -> bool:
    return sys.platform.startswith("linux") and platform.machine().lower() in ("x86_64", "amd64") and os.environ.get("DSC_LOADER", "").lower() != "mcjit"


class ElfImage:
    """An x86-64 ELF relocatable object loaded into this process without LLVM.

    Loads the allocated sections (code, constants, data) into one anonymous
    mapping: code and calls' stubs (an absolute jump to each libc/libm function,
    which may lie more than 2 GiB away), then constants and a GOT, then writable
    data; applies the relocations; makes code read+execute and constants
    read-only. Unwind tables (.eh_frame) are not loaded: the code never unwinds.
    Raises Unsupported for anything outside that (the caller falls back to MCJIT).
    """

    def __init__(self, data: bytes):
        self.base = 0
        self.size = 0
        self._symbols: dict[str, int] = {}
        data = bytes(data)
        if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise Unsupported("not a 64-bit little-endian ELF file")
        (e_type, e_machine, _, _, _, e_shoff, _, _, _, _, e_shentsize, e_shnum, e_shstrndx) = struct.unpack_from("<HHIQQQIHHHHHH", data, 16)
        if e_type != 1 or e_machine != 62 or e_shentsize != 64 or e_shnum == 0 or e_shstrndx >= _SHN_LORESERVE:
            raise Unsupported("not an x86-64 relocatable object")
        secs = [struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + 64 * i) for i in range(e_shnum)]
        names_off = secs[e_shstrndx][4]

        def cstr(off: int) -> str:
            return data[off : data.index(b"\0", off)].decode()

        # which sections to load, and where (offsets from the mapping's start)
        placed: dict[int, int] = {}
        groups: list[list[int]] = [[], [], []]  # executable, read-only, writable
        for i, (name, typ, flags, _, _, size, _, _, _, _) in enumerate(secs):
            if not flags & _SHF_ALLOC or size == 0:
                continue
            if flags & _SHF_TLS or typ in (_SHT_INIT_ARRAY, _SHT_FINI_ARRAY, _SHT_PREINIT_ARRAY):
                raise Unsupported(f"section {cstr(names_off + name)} (thread-local data or constructors)")
            if typ == _SHT_X86_64_UNWIND or cstr(names_off + name) == ".eh_frame":
                continue
            if typ not in (_SHT_PROGBITS, _SHT_NOBITS):
                raise Unsupported(f"section {cstr(names_off + name)} of type {typ:#x}")
            groups[0 if flags & _SHF_EXECINSTR else 2 if flags & _SHF_WRITE else 1].append(i)

        symtab = [i for i, s in enumerate(secs) if s[1] == _SHT_SYMTAB]
        if len(symtab) != 1:
            raise Unsupported("no single symbol table")
        st = secs[symtab[0]]
        str_off = secs[st[6]][4]
        syms = [struct.unpack_from("<IBBHQQ", data, st[4] + 24 * k) for k in range(st[5] // 24)]
        loaded = {i for g in groups for i in g}
        relocs = []  # (target section, offset, type, symbol index, addend)
        for _, typ, _, _, off, size, _, info, _, _ in secs:
            if typ == _SHT_REL and info in loaded:
                raise Unsupported("REL relocations")
            if typ != _SHT_RELA or info not in loaded:
                continue
            for r_off, r_info, r_add in struct.iter_unpack("<QQq", data[off : off + size]):
                relocs.append((info, r_off, r_info & 0xFFFFFFFF, r_info >> 32, r_add))

        externals = sorted({k for (_, _, _, k, _) in relocs if syms[k][3] == _SHN_UNDEF})
        got_syms = sorted({k for (_, _, t, k, _) in relocs if t in _GOT_RELOCS})

        pos = 0
        for i in groups[0]:
            pos = _align_up(pos, max(secs[i][8], 1))
            placed[i] = pos
            pos += secs[i][5]
        pos = _align_up(pos, 16)
        stub_at = {}
        for k in externals:
            stub_at[k] = pos
            pos += 16
        exec_end = pos = _align_up(pos, _PAGE)
        for i in groups[1]:
            pos = _align_up(pos, max(secs[i][8], 1))
            placed[i] = pos
            pos += secs[i][5]
        pos = _align_up(pos, 8)
        got_at = {}
        for k in got_syms:
            got_at[k] = pos
            pos += 8
        ro_end = pos = _align_up(pos, _PAGE)
        for i in groups[2]:
            pos = _align_up(pos, max(secs[i][8], 1))
            placed[i] = pos
            pos += secs[i][5]
        size = _align_up(max(pos, 1), _PAGE)

        # resolve the symbols (addresses relative to the mapping where defined here)
        ext_addr = {}
        for k in externals:
            name = cstr(str_off + syms[k][0]) if syms[k][0] else ""
            addr = _external(name) if name else 0
            if not addr:
                raise Unsupported(f"unresolved symbol {name!r}")
            ext_addr[k] = addr

        libc = _libc_fns()
        base = libc.mmap(None, size, _PROT_READ | _PROT_WRITE, _MAP_PRIVATE | _MAP_ANONYMOUS, -1, 0)
        if base in (None, ctypes.c_void_p(-1).value):
            raise Unsupported(f"mmap failed (errno {ctypes.get_errno()})")
        self.base, self.size = base, size
        try:
            self._load(data, secs, placed, syms, relocs, stub_at, got_at, ext_addr, exec_end, ro_end, size)
        except BaseException:
            self.close()
            raise
        for name_off, info, _, shndx, value, _ in syms:
            if info >> 4 in (1, 2) and name_off and shndx != _SHN_UNDEF:  # GLOBAL, WEAK
                if shndx in placed:
                    self._symbols[cstr(str_off + name_off)] = base + placed[shndx] + value
                elif shndx == _SHN_ABS:
                    self._symbols[cstr(str_off + name_off)] = value

    def _load(self, data, secs, placed, syms, relocs, stub_at, got_at, ext_addr, exec_end, ro_end, size) -> None:
        base = self.base
        image = bytearray(size)
        for i, off in placed.items():
            if secs[i][1] == _SHT_PROGBITS:
                image[off : off + secs[i][5]] = data[secs[i][4] : secs[i][4] + secs[i][5]]

        def sym_addr(k: int) -> int:
            _, _, _, shndx, value, _ = syms[k]
            if shndx == _SHN_UNDEF:
                return ext_addr[k]
            if shndx == _SHN_ABS:
                return value
            if shndx not in placed:
                raise Unsupported(f"a relocation against section {shndx}, which is not loaded (or a common symbol)")
            return base + placed[shndx] + value

        for k, at in stub_at.items():  # jmp *0(%rip); .quad target
            image[at : at + 16] = b"\xff\x25\x00\x00\x00\x00" + struct.pack("<Q", ext_addr[k]) + b"\xcc\xcc"
        for k, at in got_at.items():
            struct.pack_into("<Q", image, at, sym_addr(k))
        for sec, r_off, typ, k, add in relocs:
            at = placed[sec] + r_off
            p = base + at
            if typ == _R_X86_64_64:
                struct.pack_into("<Q", image, at, (sym_addr(k) + add) & 0xFFFFFFFFFFFFFFFF)
            elif typ == _R_X86_64_PC64:
                struct.pack_into("<q", image, at, sym_addr(k) + add - p)
            elif typ in (_R_X86_64_PC32, _R_X86_64_PLT32) or typ in _GOT_RELOCS:
                if typ in _GOT_RELOCS:
                    s = base + got_at[k]
                elif typ == _R_X86_64_PLT32 and k in stub_at:
                    s = base + stub_at[k]
                else:
                    s = sym_addr(k)
                v = s + add - p
                if not -(2**31) <= v < 2**31:
                    raise Unsupported(f"a 32-bit PC-relative relocation out of range ({typ})")
                struct.pack_into("<i", image, at, v)
            elif typ in (_R_X86_64_32, _R_X86_64_32S):
                v = sym_addr(k) + add
                if not (0 <= v < 2**32 if typ == _R_X86_64_32 else -(2**31) <= v < 2**31):
                    raise Unsupported("a 32-bit absolute relocation (code not position-independent)")
                struct.pack_into("<I" if typ == _R_X86_64_32 else "<i", image, at, v)
            else:
                raise Unsupported(f"relocation type {typ}")
        ctypes.memmove(base, bytes(image), size)
        libc = _libc_fns()
        if exec_end and libc.mprotect(base, exec_end, _PROT_READ | _PROT_EXEC) != 0:
            raise Unsupported(f"mprotect(PROT_EXEC) refused (errno {ctypes.get_errno()})")
        if ro_end > exec_end and libc.mprotect(base + exec_end, ro_end - exec_end, _PROT_READ) != 0:
            raise Unsupported(f"mprotect(PROT_READ) refused (errno {ctypes.get_errno()})")

    def address(self, name: str) -> int:
        """A defined global symbol's address, 0 when the object has none by that name."""
        return self._symbols.get(name, 0)

    def close(self) -> None:
        if self.base:
            _libc_fns().munmap(self.base, self.size)
            self.base = 0


class NativeModule:
    """An object file loaded into this process; `run` calls its dsc_run."""

    def __init__(self, object_code: bytes, num_threads: int | None = None):
        self._engine = None
        self._image = None
        if native_loader_available():
            try:
                self._image = ElfImage(object_code)
            except Unsupported:
                if os.environ.get("DSC_LOADER", "").lower() == "elf":
                    raise
                self._image = None
        if self._image is None:
            self._engine, self._tm = _mcjit(object_code)
        self.loader = "elf" if self._image is not None else "mcjit"
        self._lookup = self._image.address if self._image is not None else self._engine.get_function_address
        addr = self._lookup("dsc_run")
        if not addr:
            from dsc.runtime.errors import ArtifactError

            raise ArtifactError("the artifact's native code has no dsc_run entry point", hint="recompile the model with this version of dsc")
        self._fn = _RUN(addr)
        self._entries = {"dsc_run": self._fn}
        self.num_threads = max(1, num_threads or os.cpu_count() or 1)
        # Workers are parked inside native code (dsc_worker); an inference is one native
        # call (dsc_dispatch). One inference at a time owns them; a concurrent call runs
        # single-threaded in its caller's thread instead.
        self._pool_lock = threading.Lock()
        self._ctl = np.zeros(32, dtype=np.int64)
        self._workers: list[threading.Thread] = []
        if self.num_threads > 1:
            self._dispatch = _DISPATCH(self._lookup("dsc_dispatch"))
            stop = _STOP(self._lookup("dsc_stop"))
            worker = _WORKER(self._lookup("dsc_worker"))
            ctl = self._ctl.ctypes.data
            for t in range(1, self.num_threads):
                th = threading.Thread(target=worker, args=(ctl, t), name=f"dsc-worker-{t}", daemon=True)
                th.start()
                self._workers.append(th)
            weakref.finalize(self, _shutdown, stop, ctl, self._workers, self._ctl, self._engine, self._image)
        elif self._image is not None:
            weakref.finalize(self, self._image.close)

    def entry(self, name: str):
        """Another entry point with dsc_run's signature (e.g. a CPU segment `dsc_seg0` of a CPU+GPU artifact)."""
        fn = self._entries.get(name)
        if fn is None:
            addr = self._lookup(name)
            if not addr:
                from dsc.runtime.errors import ArtifactError

                raise ArtifactError(f"the artifact's native code has no {name} entry point", hint="recompile the model with this version of dsc")
            fn = self._entries[name] = _RUN(addr)
        return fn

    def run(self, inputs: list[np.ndarray], outputs: list[np.ndarray], weights: np.ndarray, arena: np.ndarray, entry: str = "dsc_run") -> None:
        fn = self._fn if entry == "dsc_run" else self.entry(entry)
        ins = (ctypes.c_void_p * max(len(inputs), 1))(*[a.ctypes.data for a in inputs])
        outs = (ctypes.c_void_p * max(len(outputs), 1))(*[a.ctypes.data for a in outputs])
        barrier = np.zeros(8, dtype=np.int64)  # count, generation (own cache line per call)
        args = (ins, outs, weights.ctypes.data, arena.ctypes.data)
        bar = barrier.ctypes.data
        if not self._workers or not self._pool_lock.acquire(blocking=False):
            fn(*args, 0, 1, bar)
            return
        try:
            self._dispatch(*args, self.num_threads, bar, self._ctl.ctypes.data, ctypes.cast(fn, ctypes.c_void_p).value)
        finally:
            self._pool_lock.release()


def _mcjit(object_code: bytes):
    """The object loaded by llvmlite's MCJIT (LLVM's own loader: any target LLVM knows)."""
    import llvmlite.binding as llvm

    _init_llvm(llvm)
    target = llvm.Target.from_default_triple()
    tm = target.create_target_machine(reloc="pic", codemodel="default")
    empty = llvm.parse_assembly("")
    empty.triple = llvm.get_process_triple()
    engine = llvm.create_mcjit_compiler(empty, tm)
    engine.add_object_file(llvm.ObjectFileRef.from_data(object_code))
    engine.finalize_object()
    return engine, tm


def _shutdown(stop, ctl: int, workers: list, keep_alive, engine, image) -> None:
    """Release the parked workers (they return from dsc_worker) before the code is freed."""
    stop(ctl)
    for th in workers:
        th.join(timeout=1.0)
    if image is not None and not any(th.is_alive() for th in workers):
        image.close()  # (a worker that has not returned keeps the code: never unmap under it)
    del keep_alive, engine
