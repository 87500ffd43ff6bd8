"""Independent launches of one op on a second CUDA stream.

The sequential state walks (kernel_h, kernel_dh) run one program a D tile, kv head and sequence: ~12% occupancy, an
instruction issued every 6-7 cycles a warp (docs/log.md, "Kernels", Nsight Compute). Where a walk does not depend on
the kernel launched beside it (the value pass's walk beside the key pass's walk and kernel_a in the forward), the two
share the SMs instead of waiting for each other.

Usage, inside one op:

    side = side_stream(x.device, rows)  # None: no CUDA, a small op or SETTINGS.overlap off: all in order
    h = torch.empty(...)                # every tensor allocated on the current stream, as usual
    with launching(side, tmp):          # the block's launches go to the side stream, after all the current one
        walk[grid](x, h, tmp)           # had queued; tmp (a temporary the launches read) is kept alive until join
    ...                                 # launched on the current stream meanwhile
    join(side)                          # the current stream waits for the side one

Only launches change stream; memory is allocated, and freed, on the current stream. So the caching allocator never
hands out a block the side stream may still use: the outputs are first freed after `join`, and the temporaries are
held until it. No `record_stream` is needed, and a CUDA graph's memory pool (torch.compile's CUDA graph trees,
whose eager warm-up runs expect every output in the current stream's pool: pytorch/pytorch#151199) holds all of it.
Inside a CUDA graph capture the op still keeps one stream: the graph has no host time left to hide.
"""

from __future__ import annotations

import contextlib

import torch

from gsa.ops.triton.settings import SETTINGS

_streams: dict[int, torch.cuda.Stream] = {}


class Side:
    """The second stream of one op call, and the temporaries its launches read until `join`."""

    def __init__(self, stream: torch.cuda.Stream):
        self.stream = stream
        self.held: list[torch.Tensor] = []


def side_stream(device: torch.device, rows: int) -> Side | None:
    """The second stream of `device` (one per device, made on first use) for an op over `rows` = B * T * HQ query
    rows, or None where launches stay in order: a CPU tensor (the Triton interpreter), SETTINGS.overlap False,
    fewer rows than SETTINGS.overlap_min_rows (a small op is bound by the host, which the waits would slow), or a
    CUDA graph capture."""
    if not SETTINGS.overlap or device.type != "cuda" or rows < SETTINGS.overlap_min_rows:
        return None
    if torch.cuda.is_current_stream_capturing():
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _streams:
        _streams[index] = torch.cuda.Stream(device=index)
    return Side(_streams[index])


_IN_ORDER = contextlib.nullcontext()  # reusable: the block's launches stay on the current stream


def launching(side: Side | None, *held: torch.Tensor | None):
    """Launch the block's kernels on `side`'s stream, after everything already queued on the current stream, and
    hold `held` (None skipped: temporaries allocated on the current stream that those kernels read or write) until
    join(side). A no-op for None (without building a generator: a small op's host time is its wall clock).
    Allocate nothing inside the block."""
    return _IN_ORDER if side is None else _on_side(side, held)


@contextlib.contextmanager
def _on_side(side: Side, held: tuple):
    side.stream.wait_stream(torch.cuda.current_stream(side.stream.device))
    side.held.extend(t for t in held if t is not None)
    with torch.cuda.stream(side.stream):
        yield


def join(side: Side | None) -> None:
    """Make the current stream wait for everything launched on `side`, then let go of its temporaries (their memory
    is freed on the current stream, after the wait)."""
    if side is None:
        return
    torch.cuda.current_stream(side.stream.device).wait_stream(side.stream)
    side.held.clear()
