"""Session 11: a minimal check of the H100 finding behind the ds fix (BENCHMARKS.md, session 11). In kernel_ds the
chunk-wide 16-bit dot y_t . x_j as a [64, 16] tile (lowered by Triton 3.6 to a Hopper wgmma) was ~3e-3 (relative)
off the same dot on float32 copies, while the [16, 64] orientation (mma.sync) was exact to 1e-7. This isolates the
dot: C = Y @ X^T accumulated over K in BK steps as in the kernel, both orientations, bf16 and fp16 inputs, against
float64. If [64, 16] is exact here too, the error came from something around the dot in kernel_ds, not from the
dot itself. Run on the GPU: python benchmarks/scripts/gpu_wgmma_repro.py"""
import torch
import triton
import triton.language as tl


@triton.jit
def dot_kernel(y, x, out, K, ROWS_Y: tl.constexpr, BY: tl.constexpr, BX: tl.constexpr, BK: tl.constexpr):
    """ROWS_Y: out[BY, BX] = Y @ X^T (the [64, 16] wgmma form); else out[BX, BY] = X @ Y^T (the [16, 64] form)."""
    o_y, o_x = tl.arange(0, BY), tl.arange(0, BX)
    acc_yx = tl.zeros([BY, BX], dtype=tl.float32)
    acc_xy = tl.zeros([BX, BY], dtype=tl.float32)
    for k0 in range(0, K, BK):
        o_k = k0 + tl.arange(0, BK)
        b_y = tl.load(y + o_y[:, None] * K + o_k[None, :])
        b_x = tl.load(x + o_x[:, None] * K + o_k[None, :])
        if ROWS_Y:
            acc_yx += tl.dot(b_y, tl.trans(b_x))
        else:
            acc_xy += tl.dot(b_x, tl.trans(b_y))
    if ROWS_Y:
        tl.store(out + o_y[:, None] * BX + o_x[None, :], acc_yx)
    else:
        tl.store(out + o_y[None, :] * BX + o_x[:, None], acc_xy)  # stored as [BY, BX] too


def main():
    torch.manual_seed(0)
    K = 128
    for dtype in (torch.bfloat16, torch.float16):
        for trial in range(3):
            y = torch.randn(64, K, device="cuda").to(dtype)
            x = torch.randn(16, K, device="cuda").to(dtype)
            ref = y.double() @ x.double().T
            row = [f"{str(dtype)[6:]:9s} trial {trial}"]
            for rows_y in (True, False):
                out = torch.empty(64, 16, device="cuda")
                dot_kernel[(1,)](y, x, out, K, ROWS_Y=rows_y, BY=64, BX=16, BK=64)
                err = ((out.double() - ref).norm() / ref.norm()).item()
                row.append(f"{'[64,16] Y@X^T' if rows_y else '[16,64] X@Y^T'}: rel err {err:.2e}")
            print("  ".join(row))


if __name__ == "__main__":
    main()
