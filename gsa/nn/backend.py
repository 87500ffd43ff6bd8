"""When the modules run their fused Triton kernels (RMSNorm, SwiGLU) instead of PyTorch element-wise ops.

"auto" (the default) takes the kernels for CUDA tensors in float16/bfloat16/float32 in eager mode, and PyTorch
otherwise: on a CPU, for float64, and inside a torch.compile trace, where inductor fuses those ops with their
neighbours itself (the compiled decode step). "triton" forces the kernels (tests run them on the CPU under the
Triton interpreter); "torch" forces PyTorch (`gsa bench train` measures both).
"""

from __future__ import annotations

import torch

KERNELS = "auto"


def use_triton_kernels(x: torch.Tensor) -> bool:
    """Whether a module should run its Triton kernel on activation x (read at call time)."""
    if KERNELS not in ("auto", "triton", "torch"):
        raise ValueError(f"gsa.nn.backend.KERNELS must be 'auto', 'triton' or 'torch', got {KERNELS!r}")
    if KERNELS == "triton":
        from gsa.ops.api import triton_runs_on

        if not triton_runs_on(x.device):  # else Triton's launcher fails on the host pointer, naming neither
            raise ValueError(f"gsa.nn.backend.KERNELS = 'triton' runs the modules' kernels on CUDA tensors (or under "
                             f"TRITON_INTERPRET=1), got an activation on {x.device}: set it to 'auto' or 'torch'")
        return True
    if KERNELS == "torch":
        return False
    if torch.compiler.is_compiling():
        return False
    from gsa.ops.api import resolve_backend

    return resolve_backend("auto", x.device, x.dtype) == "triton"
