"""Independent launches of one op on a second CUDA stream.

The sequential state walks (kernel_h, kernel_dh) run one program a D tile, kv head and sequence: ~12% occupancy, an
instruction issued every 6-7 cycles a warp (docs/log.md, "Kernels", Nsight Compute). Where a walk does not depend on
the kernel launched beside it (the value pass's walk beside the key pass's walk and kernel_a in the forward), the two
share the SMs instead of waiting for each other.

Usage, inside one op:

    side = side_stream(x.device, rows)  # None: no CUDA, a small op or SETTINGS.overlap off: all in order
    with beside(side):
        h = walk(...)                   # launched on the side stream, after all that the current one had queued
    ...                                 # launched on the current stream meanwhile
    join(side, h)                       # the current stream waits for the side one; h is marked as used on it

What the side stream allocates belongs to its pool; `join` records each such output on the current stream, so the
caching allocator does not hand its memory out again before the current stream's work on it is done.

Inside a CUDA graph capture the op keeps one stream. torch.compile's CUDA graph trees (mode="reduce-overhead") also
run the op eagerly first and expect its outputs in the graph's memory pool, which side-stream allocations are not
(pytorch/pytorch#151199): set SETTINGS.overlap = False there. Allocating every tensor on the current stream before
the side launches (keeping the side's temporaries alive until `join`) would lift that; not done yet.
"""

from __future__ import annotations

import contextlib

import torch

from gsa.ops.triton.settings import SETTINGS

_streams: dict[int, torch.cuda.Stream] = {}


def side_stream(device: torch.device, rows: int) -> torch.cuda.Stream | None:
    """The second stream of `device` (one per device, made on first use) for an op over `rows` = B * T * HQ query
    rows, or None where launches stay in order: a CPU tensor (the Triton interpreter), SETTINGS.overlap False, or
    fewer rows than SETTINGS.overlap_min_rows (a small op is bound by the host, which the waits would slow)."""
    if not SETTINGS.overlap or device.type != "cuda" or rows < SETTINGS.overlap_min_rows:
        return None
    if torch.cuda.is_current_stream_capturing():
        # a CUDA graph already removes the host time; and the side stream's allocations (recorded on the
        # capturing stream) would fall outside the graph's memory pool
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _streams:
        _streams[index] = torch.cuda.Stream(device=index)
    return _streams[index]


@contextlib.contextmanager
def beside(side: torch.cuda.Stream | None):
    """Launch the block's kernels on `side`, after everything already queued on the current stream (a no-op for
    None)."""
    if side is None:
        yield
        return
    side.wait_stream(torch.cuda.current_stream(side.device))
    with torch.cuda.stream(side):
        yield


def join(side: torch.cuda.Stream | None, *outputs: torch.Tensor | None) -> None:
    """Make the current stream wait for `side`, and record the tensors `side` allocated (None skipped) as used on
    the current stream."""
    if side is None:
        return
    current = torch.cuda.current_stream(side.device)
    current.wait_stream(side)
    for t in outputs:
        if t is not None:
            t.record_stream(current)
