"""The register-blocked micro-kernel that GEMM and convolution share, and its tile model.

The micro-kernel keeps an R x V block of results in vector registers: R rows,
V vectors of W lanes (W = the target's f32 vector width: 16 with AVX-512),
and for every k does

    acc[r][v] = fma(splat(A(k, r)), B(k, v), acc[r][v])

so each k costs R broadcasts + V vector loads for R*V FMAs. How A and B are
addressed is the caller's business (closures): gemm/matmul (rows = M,
columns = N, emit_gemm.py), convolution with pixels as lanes (rows = output
channels, columns = output pixels, emit_conv.py), convolution with channels
as lanes (rows = output pixels, columns = output channels, emit_conv_cl.py),
Winograd's batched GEMMs (emit_winograd.py). The tile shape comes from a
small cycle model (`choose_tile`: FMA and load ports, FMA latency, B's L2
bandwidth).
"""

from __future__ import annotations

from dsc.backends.cpu.irb import KernelBuilder
from dsc.backends.cpu.vector_ir import carried_loop

# the micro-kernels are float32: other dtypes (float16 included) are refused with this hint
F32_ONLY_HINT = "compute it in float32: Cast its inputs to float32 (and the result back), or compile with --precision fp32 for CPU targets"


def microkernel(kb: KernelBuilder, R: int, V: int, klo, khi, a_val, b_vec, accs: list[list], inner: int = 1) -> list[list]:
    """Run the register block over k in [klo, khi): accs[r][v] += A(k, s, r) * B(k, s, v)
    for the `inner` sub-steps s of each k (conv taps; 1 for a plain GEMM).

    a_val(k, s, r) -> f32 scalar; b_vec(k, s, v) -> <W x float>.
    """
    w = accs[0][0].type.count

    def body(kk, flat):
        flat = list(flat)
        for s in range(inner):
            bs = [b_vec(kk, s, v) for v in range(V)]
            for r in range(R):
                a = kb.splat(a_val(kk, s, r), w)
                for v in range(V):
                    flat[r * V + v] = kb.fma(a, bs[v], flat[r * V + v])
        return flat

    flat = carried_loop(kb, klo, khi, [a for row in accs for a in row], body)
    return [flat[r * V : (r + 1) * V] for r in range(R)]


def tile_cost(K: int, r: int, v: int, w: int) -> float:
    """Modelled cycles of one r x v tile over K: per k, r*v FMAs and r+v loads at 2/cycle, at
    least 4 cycles (FMA latency), B streaming from L2 (~24 bytes/cycle: wide tiles starve;
    A broadcasts hit L1), plus the tile's setup and stores."""
    return K * (max(r * v / 2, (r + v) / 2, 4, v * w * 4 / 24) + 0.6) + 3 * r * v + 40


def choose_tile(M: int, ncols: int, K: int, w: int, regs: int, max_rows: int = 16, pad_rows: bool = False) -> tuple[int, int]:
    """(R rows, V vectors) minimizing a cycle model: per k, R*V FMAs and R+V loads at 2/cycle,
    at least 4 cycles (FMA latency over the accumulators), the B vectors at L2 bandwidth,
    plus a per-tile overhead.
    pad_rows: the last row block is computed at full height (padded or shifted)."""
    nv = -(-ncols // w)
    best = None
    for R in range(1, min(M, max_rows) + 1):
        for V in range(1, min(nv, 8) + 1):
            if R * V + V + 2 > regs:
                continue
            mt, rt = divmod(M, R)
            if pad_rows and rt:
                mt, rt = mt + 1, 0
            nt, vt = divmod(nv, V)

            def cost(r, v):
                return tile_cost(K, r, v, w)

            c = mt * nt * cost(R, V)
            if rt:
                c += nt * cost(rt, V)
            if vt:
                c += mt * cost(R, vt)
            if rt and vt:
                c += cost(rt, vt)
            key = (c, -R * V)
            if best is None or key < best[0]:
                best = (key, (R, V))
    return best[1]


__all__ = ["F32_ONLY_HINT", "choose_tile", "microkernel", "tile_cost"]
