"""Shared pieces of the GSA Triton kernels: chunk bookkeeping, tile sizes and small jit helpers.

Every kernel sees the batch as one packed sequence of TT = B * T tokens with N segments (a plain batch is
packed with cu_seqlens = [0, T, 2T, ...]), so one code path serves both layouts.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from gsa.ops.validation import TRITON_MAX_SLOTS

# Chunk length of the training kernels, and the sub-block inside it in which decays are taken pairwise.
BT = 64
BC = 16


def block(n: int, cap: int) -> int:
    """Tile size for a dimension of n: a power of two, at least 16 (tl.dot needs 16), at most cap."""
    return max(16, min(cap, triton.next_power_of_2(n)))


# The state kernels (chunk_h, chunk_dh) walk a sequence's chunks one after another, so their parallelism is
# (D tiles) x N sequences x H heads. At B = 1 and long T (the 1.3B shape at T = 16K: 8 tiles x 4 heads = 32
# programs of 256 steps each on 132 SMs) most of the GPU idles; the tile narrows, down to 16, until the programs
# fill the SMs once. Measured cost of the narrow regime on the H100: GSA-1.3B's training step grew from 522 to
# 633 ms from T = 2K (B = 8) to 16K (B = 1) at 64-wide tiles; the narrowing itself is not measured yet.
STATE_TILE_MAX = 64


@functools.lru_cache(maxsize=8)
def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    return torch.cuda.get_device_properties(device).multi_processor_count


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (0 for any other device)."""
    return _sm_count(torch.device(device))


# Programmatic dependent launch (Hopper and later): a kernel launched with it may start while the kernel before it
# in the stream finishes, and `tl.extra.cuda.gdc_wait()` inside it waits for that kernel's completion and memory.
# Used by the fused recurrent decode kernels, whose launch and prologue then overlap the previous kernel's tail (a
# decode step is ~270 small kernels at batch 1; BENCHMARKS.md, "Decoding"). Read at call time, so a benchmark can switch
# it off; never under the interpreter or on a GPU before sm_90.
PDL = True


@functools.lru_cache(maxsize=8)
def _pdl_capable(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9


def use_pdl(device: torch.device) -> bool:
    """Whether kernels on `device` launch with programmatic dependent launch (PDL above)."""
    return PDL and os.environ.get("TRITON_INTERPRET") != "1" and _pdl_capable(torch.device(device))


def pdl_launch(device: torch.device) -> dict:
    """Launch keywords of a kernel with a `PDL` constexpr (its gdc_wait / gdc_launch_dependents): PDL, and Triton's
    launch_pdl option where it is on."""
    return dict(PDL=True, launch_pdl=True) if use_pdl(device) else dict(PDL=False)


def check_slots(M: int) -> None:
    """The kernels hold a chunk's M slots in one tile of at most TRITON_MAX_SLOTS (gsa.ops.validation): refuse more
    here too, for callers of gsa.ops.triton that bypass gsa.ops' checks."""
    if M > TRITON_MAX_SLOTS:
        raise ValueError(f"the Triton kernels take at most {TRITON_MAX_SLOTS} slots (M), got M = {M}: use "
                         "gsa.ops.gated_slot_attention(..., backend='torch')")


def state_tile(D: int, sequences_x_heads: int, device: torch.device) -> int:
    """D-tile width of the sequential state kernels (see STATE_TILE_MAX)."""
    bd = block(D, STATE_TILE_MAX)
    while bd > 16 and sequences_x_heads * triton.cdiv(D, bd) < _sm_count(torch.device(device)):
        bd //= 2
    return bd


# Warps per program of the chunked kernels. Compiled for sm_90 (benchmarks/kernel_resources.py) most of these kernels
# sit at 255 registers and spill at 4 warps (kernel_ds 1656 B a thread, kernel_a and kernel_dh ~424-520 B); at 8 the
# spills nearly vanish, yet the 1.3b fwd+bwd ran 1.3x slower on the H100 (docs/log.md, "Kernels"): 4 stays. The
# launchers read this at call time, so a benchmark can switch it.
CHUNK_WARPS = 4

# Launch options of single kernels, by the short name of their launch_options() call ("cumsum", "h", "a", "p", "o",
# "dp", "dh", "dx", "ds", "dg"; "h-narrow" / "dh-narrow": the state kernels at 16-wide tiles, see state_tile;
# "h-carry" / "dh-carry": the segmented walks' carry kernels; "a-small" / "dp-small": kernel_a at D <= 128):
# num_warps, num_stages and, for "o" and "dx", the D tile "BD". Chosen for the
# H100 from one side-by-side sweep of every kernel over a few options (docs/log.md, "Kernels"; no
# autotuning at run time). Read at call time, so a sweep can replace it. That sweep (us a fwd+bwd at the
# 1.3b / grouped / small-head shapes; BENCHMARKS.md): kernel_dx 750 / 904 / 352 at the default 4 warps and 3 stages,
# 379 / 522 / 180 at 8 warps and 1 stage (software pipelining of its short loop costs shared memory and occupancy);
# kernel_h 551 / 486 / 339 -> 543 / 410 / 302 at 2 stages. At 1.3b-long (B 1, T 16K: the state kernels' tiles narrow
# to 16) the state kernels want 8 warps and 2 stages: kernel_h 2434 (4 warps, 2 stages) -> 1890 us, kernel_dh 1686 ->
# 1322; at 64- and 32-wide tiles 8 warps lost (kernel_dh at the grouped shape 774 -> 1154). Every other kernel was best
# or within noise at the default.
KERNEL_OPTIONS: dict[str, dict[str, int]] = {
    "dx": dict(num_warps=8, num_stages=1),
    "h": dict(num_warps=4, num_stages=2),
    "h-narrow": dict(num_warps=8, num_stages=2),
    "dh-narrow": dict(num_warps=8, num_stages=2),
    # kernel_a (forward "a", backward "dp") at head dims <= 128: 2 warps, 2 stages (grouped 1612 -> 1529 us, small-head
    # 458 -> 368); at K = 512 the default stays (429 vs 491 at 2 warps)
    "a-small": dict(num_warps=2, num_stages=2),
    "dp-small": dict(num_warps=2, num_stages=2),
}


def launch_options(name: str, **defaults) -> dict:
    """The launch keywords of kernel `name`: num_warps = CHUNK_WARPS and `defaults`, then KERNEL_OPTIONS[name]."""
    return {"num_warps": CHUNK_WARPS, **defaults, **KERNEL_OPTIONS.get(name, {})}


def launch_key() -> tuple:
    """What the launch options depend on (part of a configuration's identity for the first-call warm pass)."""
    return CHUNK_WARPS, tuple(sorted((k, tuple(sorted(v.items()))) for k, v in KERNEL_OPTIONS.items()))


# Storage of the chunk-start states that the forward writes and the chunk kernels read back (each read several times:
# a chunk's four sub-block programs each read its whole [D, M] state). "float32" (default, what every figure in
# BENCHMARKS.md used) or "input" (the inputs' dtype, as fla-core stores them: half the state traffic and memory;
# float32 inputs are unaffected). Accumulation stays float32 either way, and so do the final states the op returns.
# Read at call time so a benchmark can switch it. Measured on the H100 at the 1.3B shape (docs/log.md, "Kernels"): extra memory
# 944 -> 816 MiB, fwd+bwd 4.07 -> 3.91 ms; but dg then keeps the whole-sequence sum (cumsum.py), 3.1x the torch
# backend's dg error in bf16 at T = 2048, so it stays opt-in.
CHUNK_STATES = "float32"


def chunk_state_dtype(dtype: torch.dtype) -> torch.dtype:
    if CHUNK_STATES not in ("float32", "input"):
        raise ValueError(f"CHUNK_STATES must be 'float32' or 'input', got {CHUNK_STATES!r}")
    return dtype if CHUNK_STATES == "input" else torch.float32


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot precision for float32 operands (intermediates such as P, decayed weights and states).

    tf32 keeps 10 mantissa bits: well under bf16 input rounding (7 bits), but as coarse as fp16's, so fp16 inputs
    get 3xTF32 (near float32) and float32 inputs full IEEE float32."""
    return {torch.float32: "ieee", torch.float16: "tf32x3"}.get(dtype, "tf32")


# First-call compilation in parallel. A cold first forward+backward of the 1.3B shape compiled its 14 kernels one
# after another as each was first launched: 19.7-24.2 s on the H100 host, over a 20 s budget.
# Compiling them in threads overlaps Triton's passes and ptxas (14 kernels for sm_90 on a 2-core machine: 13.5 s
# serial, 8.6 s in threads; on the H100 host's 16 cores the first call took 8.9 s, cold cache). Inside
# compile_in_parallel() the launchers queue each launch's compilation instead of running it; leaving the block
# compiles the queue in a thread pool and fills Triton's caches, so the real launches that follow find their kernels
# compiled.
_queue = threading.local()


def launch(kernel, grid):
    """kernel[grid], or inside compile_in_parallel() a stand-in that queues kernel.warmup(..., grid=grid) with the
    same arguments (same specialisation, nothing runs)."""
    jobs = getattr(_queue, "jobs", None)
    if jobs is None:
        return kernel[grid]
    return lambda *args, **kwargs: jobs.append((kernel, grid, args, kwargs))


@contextlib.contextmanager
def compile_in_parallel(workers: int | None = None):
    """Queue the launches made inside the block (their outputs stay unwritten), then compile them in `workers`
    threads (default: the CPU count, at most 16). Yields the queue: (kernel, grid, args, kwargs) a launch."""
    _queue.jobs = jobs = []
    try:
        yield jobs
    finally:
        _queue.jobs = None
    workers = workers or min(16, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
        for f in [pool.submit(k.warmup, *a, grid=g, **kw) for k, g, a, kw in jobs]:
            f.result()


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

    With cu_seqlens this reads the offsets to the host (one sync), as any varlen kernel launch must.
    """
    if cu_seqlens is None:
        lengths = (T,) * B
    else:
        cu = cu_seqlens.tolist()
        lengths = tuple(b - a for a, b in zip(cu[:-1], cu[1:]))
    return _chunks_cached(lengths, torch.device(device))


def max_chunks(cu_seqlens: torch.Tensor | None, B: int, T: int) -> int:
    """An upper bound on the number of chunks from shapes alone (for fake tensors): exact without cu_seqlens."""
    if cu_seqlens is None:
        return B * triton.cdiv(T, BT)
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
# re-reads came ~NT programs apart and missed L2: `kernel_dx` read 537 MB from DRAM a call at the 1.3B shape
# against ~260 MB touched once (docs/log.md, "Kernels"). The kernels now take a flat 1-D grid ordered tile-first.
@triton.jit
def program_tiles(n0, n1):
    """(i0, i1, i2) of a flat grid of n0 x n1 x n2 programs, i0 varying fastest, then i1 (grid = (n0 * n1 * n2,))."""
    pid = tl.program_id(0)
    return pid % n0, (pid // n0) % n1, pid // (n0 * n1)


def tiles_grid(n0: int, n1: int, n2: int) -> tuple[int]:
    """The flat grid that program_tiles decodes."""
    return (n0 * n1 * n2,)


@triton.jit
def sub_block_program(cu_seqlens, chunk_indices, H, HQ, BT: tl.constexpr, BC: tl.constexpr):
    """What a program of a tiles_grid(BT // BC sub-blocks, HQ query heads, NT chunks) works on:
    (i_c, i_i, i_hq, i_h, t0, eos, ti), the chunk, its sub-block, the query head and its kv head, the chunk's first
    token, the sequence end and the sub-block's first token (the caller returns early when ti >= eos)."""
    NC: tl.constexpr = BT // BC
    i_i, i_hq, i_c = program_tiles(NC, HQ)
    t0, eos = chunk_bounds(cu_seqlens, chunk_indices, i_c, BT)
    return i_c, i_i, i_hq, i_hq // (HQ // H), t0, eos, t0 + i_i * BC


# Diagonal sub-blocks: exp(Gl_t - Gl_j) for j <= t inside one BC-row sub-block. Taken pairwise ([BC, BC, BM] exps
# and a reduction outside the tensor cores) it was about half of kernel_a's and kernel_ds's time and most of
# kernel_p's (at the MQAR model's K = 32 heads, where the D loops are short, these three kernels took
# 2.7-3.0 ms a step of 29). Factored through a reference row r of the sub-block, exp(Gl_t - Gl_r) * exp(Gl_r - Gl_j),
# it becomes one more tensor-core dot; one of the two factors is >= 1 and reaches exp(span), span = the largest
# decay inside the sub-block (max over slots of Gl_first - Gl_last). A program factors only while span stays under
# FACTOR_SPAN (e^30 ~ 1e13: far from float32's e^88, and both factors' products stay normal); GSA's gates allow
# larger spans (logsigmoid is unbounded below), and such sub-blocks keep the pairwise path. At init the slot gates
# decay ~0.09 a step (span ~1.4), so the fast path is the common one. Read at call time (tests force either path:
# -1 never factors, inf always does).
FACTOR_SPAN = 30.0


def factor_span() -> float:
    return FACTOR_SPAN


@triton.jit
def sub_block_span(b_g, b_gr):
    """The decay inside a sub-block: max over rows and slots of Gl_r - Gl_i (b_g [BC, BM] with masked rows and slots
    loaded as 0, b_gr [BM] the first row: masked entries give Gl_r <= 0, never more than a valid one)."""
    return tl.max(tl.max(b_gr[None, :] - b_g, 1), 0)


@triton.jit
def row_dots(pa, o_a, m_a, stride_a, pb, o_b, m_b, stride_b, D, BA: tl.constexpr, BB: tl.constexpr,
             BD: tl.constexpr, PREC: tl.constexpr):
    """[BA, BB] float32: a_i . b_j over D in BD-wide tiles, rows o_a of pa and o_b of pb (row strides given; each
    row's D entries contiguous). The first operand's rows are the dot's M: keep the 16-row side first."""
    acc = tl.zeros([BA, BB], dtype=tl.float32)
    for i_d in range(tl.cdiv(D, BD)):
        o_d = i_d * BD + tl.arange(0, BD)
        m_d = o_d < D
        b_a = load_rows(pa, o_a, m_a, stride_a, o_d, m_d)  # [BA, BD]
        b_b = load_rows(pb, o_b, m_b, stride_b, o_d, m_d)  # [BB, BD]
        acc += tl.dot(b_a, tl.trans(b_b), input_precision=PREC)
    return acc


@triton.jit
def decayed_rows(b_x, b_g, b_gr, m_rows):
    """b_x * exp(Gl_r - Gl) on the rows where m_rows holds, 0 elsewhere (b_x, b_g: [R, BM]; b_gr: [BM]). The exp's
    argument is masked first: unselected rows may hold any decay, and inf * 0 would poison the selected result."""
    return tl.where(m_rows[:, None], b_x * tl.exp(tl.where(m_rows[:, None], b_gr[None, :] - b_g, 0.0)), 0.0)


@triton.jit
def pairwise_decay(b_g, o_i, m_i):
    """exp(Gl_t - Gl_j) [BC (t), BC (j), BM] for rows j <= t of one sub-block (0 elsewhere); b_g: [BC, BM]."""
    m_tj = (o_i[:, None] >= o_i[None, :]) & m_i[:, None] & m_i[None, :]
    return tl.exp(tl.where(m_tj[:, :, None], b_g[:, None, :] - b_g[None, :, :], float("-inf")))


@triton.jit
def gate_from_logits(b_f, norm):
    """Slot logits f -> (g, s): g = logsigmoid(f) / norm, s = 1 - exp(g), in float32 and accurate for large f
    (tiny |g|), where log(1 + e) and 1 - exp(g) would round to zero: series below 1e-4 and 1e-3."""
    b_e = tl.exp(-tl.abs(b_f))
    b_l = tl.where(b_e < 1e-4, b_e - 0.5 * b_e * b_e, tl.log(1.0 + b_e))
    b_g = (tl.minimum(b_f, 0.0) - b_l) / norm
    b_s = tl.where(b_g > -1e-3, -b_g * (1.0 + b_g * (0.5 + b_g / 6.0)), 1.0 - tl.exp(b_g))
    return b_g, b_s


@triton.jit
def masked_softmax(b_x, m_x):
    """Row softmax of b_x [R, BM] over the entries where m_x holds; other entries (and empty rows) give 0."""
    b_x = tl.where(m_x, b_x, float("-inf"))
    b_mx = tl.max(b_x, 1)
    b_mx = tl.where(b_mx == float("-inf"), 0.0, b_mx)
    b_e = tl.exp(b_x - b_mx[:, None])
    b_z = tl.sum(b_e, 1)
    b_z = tl.where(b_z == 0.0, 1.0, b_z)
    return b_e / b_z[:, None]


@triton.jit
def load_rows(p, o_t, m_t, stride_t, o_c, m_c):
    """Load the [len(o_t), len(o_c)] tile at p + o_t * stride_t + o_c (its own dtype), zeros outside the masks."""
    return tl.load(p + o_t[:, None].to(tl.int64) * stride_t + o_c[None, :], mask=m_t[:, None] & m_c[None, :], other=0)


@triton.jit
def load_row(p, t, stride_t, o_c, m_c):
    """Load the row p + t * stride_t + o_c as float32 (zeros outside m_c)."""
    return tl.load(p + t.to(tl.int64) * stride_t + o_c, mask=m_c, other=0).to(tl.float32)
