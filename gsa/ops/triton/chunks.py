"""Chunk bookkeeping of the chunked kernels: every kernel sees the batch as one packed sequence of TT = B * T tokens
with N segments (a plain batch is packed with cu_seqlens = [0, T, 2T, ...]), so one code path serves both layouts;
and the order in which a flat grid's programs take a chunk's tiles."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from gsa.ops.triton.launch import cdiv
from gsa.ops.validation import host_offsets

CHUNK_LENGTHS = (32, 64, 128)
CHUNK_ENV = "GSA_TRITON_CHUNK"


def chunk_length(value: str | None) -> int:
    """The training kernels' chunk length from the environment variable GSA_TRITON_CHUNK's `value` (None: 64).

    Read once, at import, because every launcher and kernel takes it as a compile-time constant. 64 is the
    default and the one timed; 32 and 128 exist for the A/B that decides between them (docs/kernels.md): longer
    chunks mean half the chunk states to walk, store and reload and twice the intra-chunk work, and a whole chunk
    factors through one row only while its decay span stays under SETTINGS.factor_span (docs/algorithm.md,
    "Chunked algorithm"), which a longer chunk passes less often."""
    if value is None or value == "":
        return 64
    if value.strip() not in {str(n) for n in CHUNK_LENGTHS}:
        raise ValueError(f"{CHUNK_ENV} must be one of {', '.join(map(str, CHUNK_LENGTHS))} (the Triton kernels' chunk "
                         f"length), got {value!r}")
    return int(value)


# Chunk length of the training kernels, and the sub-block inside it in which decays are taken pairwise.
BT = chunk_length(os.environ.get(CHUNK_ENV))
BC = 16


def row_block(name: str, opts: dict, least: int, chunk_programs: bool = True) -> int:
    """The rows of a chunk a program of kernel `name` takes: launch option "RB" (popped from `opts`): 0 (the default)
    for the whole chunk (BT rows), else a divisor of BT of at least `least` and a multiple of it. Without
    `chunk_programs` (kernel_a's sub-block programs, which take `least` rows each) only 0."""
    rb = opts.pop("RB", 0)
    if not isinstance(rb, int) or isinstance(rb, bool) or rb < 0 or (rb and (rb < least or BT % rb or rb % least)):
        raise ValueError(f"SETTINGS.launch[{name!r}]['RB'] (rows a program) must be 0 (the whole chunk) or divide "
                         f"the chunk length {BT} and be a multiple of {least}, got {rb!r}")
    if rb and rb != BT and not chunk_programs:
        raise ValueError(f"SETTINGS.launch[{name!r}]['RB'] (rows a program) applies to the chunk programs (WHOLE) "
                         f"only; the sub-block programs take {least} rows")
    return rb or BT


@dataclass(frozen=True)
class Chunks:
    """Packed-sequence bookkeeping, on the device.

    cu_seqlens: [N + 1] int32 token offsets; indices: [NT, 2] int32 (sequence, chunk within it) of every chunk
    in order; offsets: [N + 1] int32 index of each sequence's first chunk in that order; max_nt: the most chunks of
    any one sequence.
    """

    cu_seqlens: torch.Tensor
    indices: torch.Tensor
    offsets: torch.Tensor
    N: int
    NT: int
    max_nt: int = 0


@functools.lru_cache(maxsize=64)
def _chunks_cached(lengths: tuple, device: torch.device) -> Chunks:
    counts = [(n + BT - 1) // BT for n in lengths]
    cu = [0]
    off = [0]
    for n, c in zip(lengths, counts):
        cu.append(cu[-1] + n)
        off.append(off[-1] + c)
    idx = [(i, c) for i, cnt in enumerate(counts) for c in range(cnt)]
    i32 = dict(dtype=torch.int32, device=device)
    return Chunks(
        cu_seqlens=torch.tensor(cu, **i32),
        indices=torch.tensor(idx, **i32).reshape(-1, 2),
        offsets=torch.tensor(off, **i32),
        N=len(lengths),
        NT=off[-1],
        max_nt=max(counts, default=0),
    )


def prepare_chunks(cu_seqlens: torch.Tensor | None, B: int, T: int, device: torch.device) -> Chunks:
    """Chunk bookkeeping for B sequences of T tokens, or for the packed sequences of cu_seqlens (B == 1).

    With cu_seqlens this reads the offsets to the host (a sync, as any varlen kernel launch must; none where the same
    unmodified tensor was read last: gsa.ops.validation.host_offsets).
    """
    if cu_seqlens is None:
        lengths = (T,) * B
    else:
        cu = host_offsets(cu_seqlens)
        lengths = tuple(b - a for a, b in zip(cu[:-1], cu[1:]))
    return _chunks_cached(lengths, torch.device(device))


def max_chunks(cu_seqlens: torch.Tensor | None, B: int, T: int) -> int:
    """An upper bound on the number of chunks from shapes alone (for fake tensors): exact without cu_seqlens."""
    if cu_seqlens is None:
        return B * cdiv(T, BT)
    return T // BT + cu_seqlens.shape[0] - 1


@triton.jit
def sequence_bounds(cu_seqlens, i_n):
    """(bos, eos): the token range of packed sequence i_n, as int64."""
    return tl.load(cu_seqlens + i_n).to(tl.int64), tl.load(cu_seqlens + i_n + 1).to(tl.int64)


@triton.jit
def chunk_bounds(cu_seqlens, chunk_indices, i_c, BT: tl.constexpr):
    """(t0, eos): the first token of chunk i_c (in Chunks.indices order) and the end of its sequence, as int64."""
    i_n, i_t = tl.load(chunk_indices + i_c * 2), tl.load(chunk_indices + i_c * 2 + 1)
    bos, eos = sequence_bounds(cu_seqlens, i_n)
    return bos + i_t * BT, eos


# Program order of the chunk kernels. A chunk's tiles (its D tiles, sub-blocks, query heads) read the same rows of
# A1, P, Gl and s, and the query heads of a group the same state. With the chunk as the fastest grid axis those
# re-reads come ~NT programs apart and miss L2 (`kernel_dx` read 537 MB from DRAM a call at the 1.3B shape against
# ~260 MB touched once; docs/log.md, "Kernels"), so the kernels take a flat 1-D grid ordered tile-first.
@triton.jit
def program_tiles(n0, n1):
    """(i0, i1, i2) of a flat grid of n0 x n1 x n2 programs, i0 varying fastest, then i1 (grid = (n0 * n1 * n2,))."""
    pid = tl.program_id(0)
    return pid % n0, (pid // n0) % n1, pid // (n0 * n1)


def tiles_grid(n0: int, n1: int, n2: int) -> tuple[int]:
    """The flat grid that program_tiles decodes."""
    return (n0 * n1 * n2,)


@triton.jit
def sub_block_tiles(cu_seqlens, chunk_indices, NH, BT: tl.constexpr, BC: tl.constexpr):
    """What a program of a tiles_grid(BT // BC sub-blocks, NH heads, NT chunks) works on: (i_c, i_i, i_n, t0, eos),
    the chunk, its sub-block, the head, the chunk's first token and the sequence end; the sub-block's first token is
    t0 + i_i * BC (the caller returns early when it is >= eos)."""
    NC: tl.constexpr = BT // BC
    i_i, i_n, i_c = program_tiles(NC, NH)
    t0, eos = chunk_bounds(cu_seqlens, chunk_indices, i_c, BT)
    return i_c, i_i, i_n, t0, eos


@triton.jit
def sub_block_program(cu_seqlens, chunk_indices, H, HQ, BT: tl.constexpr, BC: tl.constexpr):
    """sub_block_tiles over HQ query heads: (i_c, i_i, i_hq, i_h, t0, eos, ti), with i_h the query head's kv head and
    ti the sub-block's first token."""
    i_c, i_i, i_hq, t0, eos = sub_block_tiles(cu_seqlens, chunk_indices, HQ, BT, BC)
    return i_c, i_i, i_hq, i_hq // (HQ // H), t0, eos, t0 + i_i * BC
