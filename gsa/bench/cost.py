"""The op's minimum work (docs/algorithm.md, "Cost model"): FLOPs and bytes of a forward and a forward+backward, the
chunk-start states the chunked algorithm moves on top, the device's measured ceilings, and the floor they give."""

from __future__ import annotations

from dataclasses import dataclass

CHUNK = 64  # tokens a chunk (the kernels' BT)


@dataclass(frozen=True)
class Cost:
    """FLOPs and bytes of one call at shape (B, T, HQ, H, K, V, M) with `el`-byte inputs. states_*: float32 chunk-start
    states (NT chunks x H x (K + V) x M) written once and read once per use: forward 2x (write, read), backward 4x
    more (recomputed, and their gradients written and read)."""

    flops_fwd: float
    bytes_fwd: float
    flops_fwd_bwd: float
    bytes_fwd_bwd: float
    states_fwd: float
    states_fwd_bwd: float

    @classmethod
    def of(cls, B: int, T: int, HQ: int, H: int, K: int, V: int, M: int, el: int = 2) -> Cost:
        tokens = B * T
        flops = tokens * (HQ * (2 * CHUNK * (K + M) + 2 * CHUNK * (M + V) + 2 * K * M + 2 * M * V)
                          + H * (2 * K * M + 2 * M * V))
        inputs = HQ * K + H * K + H * V + 2 * H * M  # q, k, v, s, g
        bytes_fwd = tokens * el * (inputs + HQ * V)  # and write o
        bytes_bwd = tokens * el * (inputs + HQ * V + inputs)  # read the inputs and dO, write the input gradients
        states = B * -(-T // CHUNK) * H * (K + V) * M * 4
        return cls(flops, bytes_fwd, 3 * flops, bytes_fwd + bytes_bwd, 2 * states, 6 * states)

    def floors_ms(self, copy_bytes_per_s: float, flops_per_s: float) -> dict[str, float]:
        """max(bytes / bandwidth, FLOPs / matrix rate) in ms: fwd / fwd_bwd at the minimum bytes, and
        fwd_states / fwd_bwd_states with the chunk-start states' traffic added (the chunked algorithm's floor)."""
        def floor(nbytes, flops):
            return max(nbytes / copy_bytes_per_s, flops / flops_per_s) * 1e3

        return dict(fwd=floor(self.bytes_fwd, self.flops_fwd), fwd_bwd=floor(self.bytes_fwd_bwd, self.flops_fwd_bwd),
                    fwd_states=floor(self.bytes_fwd + self.states_fwd, self.flops_fwd),
                    fwd_bwd_states=floor(self.bytes_fwd_bwd + self.states_fwd_bwd, self.flops_fwd_bwd))


def ceilings(torch, do_bench) -> tuple[float, float]:
    """Measured device-to-device copy bandwidth (bytes read + written per s) and bf16 matrix rate (FLOP/s)."""
    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    t = do_bench(lambda: y.copy_(x), warmup=25, rep=200, return_mode="median") * 1e-3
    bw = 2 * x.numel() / t
    del x, y
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    t = do_bench(lambda: a @ b, warmup=25, rep=200, return_mode="median") * 1e-3
    return bw, 2 * n**3 / t
