"""Small jit helpers shared by the chunk kernels: row loads, dots over a D loop, decays inside a chunk (factored or
pairwise), the masked softmax (over one tile or several slot tiles) and the gate from slot logits."""

from __future__ import annotations

import triton
import triton.language as tl

from gsa.ops.triton.settings import SETTINGS


# Diagonal sub-blocks: exp(Gl_t - Gl_j) for j <= t inside one BC-row sub-block. Taken pairwise ([BC, BC, BM] exps
# and a reduction outside the tensor cores) it was about half of kernel_a's and kernel_ds's time and most of
# kernel_p's (at the MQAR model's K = 32 heads, where the D loops are short, these three kernels took
# 2.7-3.0 ms a step of 29). Factored through a reference row r of the sub-block, exp(Gl_t - Gl_r) * exp(Gl_r - Gl_j),
# it becomes one more tensor-core dot; one of the two factors is >= 1 and reaches exp(span), span = the largest
# decay inside the sub-block (max over slots of Gl_first - Gl_last). A program factors only while span stays under
# SETTINGS.factor_span (e^30 ~ 1e13: far from float32's e^88, and both factors' products stay normal); GSA's gates allow
# larger spans (logsigmoid is unbounded below), and such sub-blocks keep the pairwise path. At init the slot gates
# decay ~0.09 a step (span ~1.4), so the fast path is the common one. The bound is SETTINGS.factor_span.


def factor_span() -> float:
    return SETTINGS.factor_span


# A whole chunk factored through one reference row (kernel_a and kernel_ds with WHOLE) has factors up to
# e^(chunk span). Its bound never exceeds CHUNK_SPAN_MAX, whatever SETTINGS.factor_span says: the tests' inf ("always
# factor the sub-blocks") would otherwise factor chunks of span ~90 and overflow float32.
CHUNK_SPAN_MAX = 30.0


def chunk_span_max() -> float:
    return min(SETTINGS.factor_span, CHUNK_SPAN_MAX)


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


# kernel_ds's pairwise path walks the sub-block's BC key rows j one at a time, each a [BC (t), BM] decay column: as
# one [BC, BC, BM] tensor (16K floats at 64 slots, 128 registers a thread at 4 warps) it raised ptxas's spills of the
# whole kernel, fast path included, from 1192 to 1568 bytes a thread (sm_90, 1.3b shape;
# benchmarks/kernel_resources.py). kernel_a keeps pairwise_decay: walked row by row there, its spills grew (400 ->
# 456).


@triton.jit
def pairwise_column(b_g, o_c, m_i, jj):
    """exp(Gl_t - Gl_j) [BC (t), BM] for the sub-block's row j at offset jj (o_c = tl.arange(0, BC)) and its rows
    t >= j (0 on the others and on rows outside m_i); b_g: [BC, BM]."""
    b_gj = sub_block_row(b_g, o_c, jj)
    m_r = (o_c >= jj) & m_i
    return tl.where(m_r[:, None], tl.exp(tl.where(m_r[:, None], b_g - b_gj[None, :], 0.0)), 0.0)


@triton.jit
def sub_block_row(b_x, o_c, jj):
    """Row jj of b_x [BC, N] as [N] (o_c = tl.arange(0, BC))."""
    return tl.sum(tl.where((o_c == jj)[:, None], b_x, 0.0), 0)


@triton.jit
def sub_block_column(b_x, o_c, jj):
    """Column jj of b_x [N, BC] as [N] (o_c = tl.arange(0, BC))."""
    return tl.sum(tl.where((o_c == jj)[None, :], b_x, 0.0), 1)


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
def softmax_and_stats(b_x, m_x):
    """(the row softmax of b_x [R, BM] over the entries where m_x holds, 0 on the others and on empty rows; each row's
    max [R] and log of its sum of exp(x - max) [R], 0 on empty rows): softmax_from_stats rebuilds the softmax of any
    of a row's entries from them, so a kernel that reads the scores back needs no reduction over the row. Two
    numbers, not their sum (the log-sum-exp): exp((x - max) - log_sum) keeps x - max exact near the max, where
    exp(x - lse) carries lse's rounding, |x| * 2^-24, into every probability (and dG's A1 * dA1 multiplies it by |x|
    again: with q x 30, q's gradient 4.2e-6 -> 1.9e-5 off the float64 reference; docs/log.md, "Kernels";
    tests/ops/test_triton.py, test_large_slot_scores_keep_float32_accuracy)."""
    b_x = tl.where(m_x, b_x, float("-inf"))
    b_mx = tl.max(b_x, 1)
    b_mx = tl.where(b_mx == float("-inf"), 0.0, b_mx)
    b_e = tl.exp(b_x - b_mx[:, None])
    b_z = tl.sum(b_e, 1)
    b_z = tl.where(b_z == 0.0, 1.0, b_z)
    return b_e / b_z[:, None], b_mx, tl.log(b_z)


@triton.jit
def masked_softmax(b_x, m_x):
    """Row softmax of b_x [R, BM] over the entries where m_x holds; other entries (and empty rows) give 0."""
    b_p, _, _ = softmax_and_stats(b_x, m_x)
    return b_p


@triton.jit
def store_softmax_stats(stats, o_r, m_r, stride_r, b_mx, b_lz):
    """Rows o_r's (max, log-sum) as softmax_and_stats gave them, at stats + o_r * stride_r (two float32s a row)."""
    p = stats + o_r.to(tl.int64) * stride_r
    tl.store(p, b_mx, mask=m_r)
    tl.store(p + 1, b_lz, mask=m_r)


@triton.jit
def softmax_from_stats(b_x, stats, o_r, m_r, stride_r, m_x):
    """The row softmax of scores b_x [R, BM] (rows o_r, masked m_x) from the rows' (max, log-sum) stored at stats +
    o_r * stride_r (store_softmax_stats): exp((x - max) - log_sum), 0 outside m_x."""
    p = stats + o_r.to(tl.int64) * stride_r
    b_mx = tl.load(p, mask=m_r, other=0)
    b_lz = tl.load(p + 1, mask=m_r, other=0)
    return tl.where(m_x, tl.exp((b_x - b_mx[:, None]) - b_lz[:, None]), 0.0)


@triton.jit
def load_softmax(p, stats, o_r, m_r, stride_r, stats_stride, o_m, m_m):
    """softmax(A1) at rows o_r, slot tile o_m: [R, BM] float32 from the scores p (row stride stride_r, slots
    contiguous) and their rows' statistics over all slots (stats, row stride stats_stride: what kernel_a stored
    with them, store_softmax_stats), 0 outside m_r / m_m."""
    b_x = load_rows(p, o_r, m_r, stride_r, o_m, m_m)
    return softmax_from_stats(b_x, stats, o_r, m_r, stats_stride, m_r[:, None] & m_m[None, :])


@triton.jit
def mixed_dot(a, b, acc, MIX: tl.constexpr, PREC: tl.constexpr):
    """a @ b (+ acc, or None) [R, C] float32, each operand float32 or the inputs' 16-bit dtype. Two 16-bit operands:
    one dot at the 16-bit rate (exact products). MIX (SETTINGS.mixed_dots, launch.mixed_dots_mode): 1, a float32
    operand facing a 16-bit one goes in as its 16-bit rounding plus the 16-bit rounding of what that leaves, two
    dots at the 16-bit rate (~2^-16 relative in bf16, under tf32's 2^-11; also state_product's DOTS 2);
    otherwise both as float32 at input precision PREC."""
    if a.dtype != tl.float32:
        if b.dtype != tl.float32:
            return tl.dot(a, b, acc)
        if MIX == 1:
            b_hi = b.to(a.dtype)
            b_lo = (b - b_hi.to(tl.float32)).to(a.dtype)
            return tl.dot(a, b_lo, tl.dot(a, b_hi, acc))
    elif b.dtype != tl.float32:
        if MIX == 1:
            a_hi = a.to(b.dtype)
            a_lo = (a - a_hi.to(tl.float32)).to(b.dtype)
            return tl.dot(a_lo, b, tl.dot(a_hi, b, acc))
    return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision=PREC)


@triton.jit
def state_product(b_x, b_w, acc, DOTS: tl.constexpr, PREC: tl.constexpr):
    """x^T w [BD, BM] (plus acc, or None) of a state kernel's chunk: b_x [BT, BD] in the inputs' dtype, b_w [BT, BM]
    float32 decayed weights, float32 accumulation. DOTS (SETTINGS.state_dots, launch.state_dots_mode): 0, x upcast
    and float32 operands at input precision PREC; 1, both as 16-bit operands (w rounded to 16 bits); 2, w split
    into a 16-bit head and the 16-bit rounding of what it leaves, two dots on 16-bit operands (x is exact in 16 bits,
    so only the split's second rounding remains, ~2^-16 relative in bf16, under tf32's 2^-11)."""
    if DOTS == 1:
        return tl.dot(tl.trans(b_x), b_w.to(b_x.dtype), acc)
    if DOTS == 2:
        return mixed_dot(tl.trans(b_x), b_w, acc, 1, PREC)
    return tl.dot(tl.trans(b_x.to(tl.float32)), b_w, acc, input_precision=PREC)


@triton.jit
def load_rows(p, o_t, m_t, stride_t, o_c, m_c):
    """Load the [len(o_t), len(o_c)] tile at p + o_t * stride_t + o_c (its own dtype), zeros outside the masks."""
    return tl.load(p + o_t[:, None].to(tl.int64) * stride_t + o_c[None, :], mask=m_t[:, None] & m_c[None, :], other=0)


@triton.jit
def load_row(p, t, stride_t, o_c, m_c):
    """Load the row p + t * stride_t + o_c as float32 (zeros outside m_c)."""
    return tl.load(p + t.to(tl.int64) * stride_t + o_c, mask=m_c, other=0).to(tl.float32)
