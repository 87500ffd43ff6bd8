"""Chunked GSA in plain PyTorch: the CPU backend (docs/algorithm.md, 'Chunked algorithm'). Differentiable through
autograd.

Layout inside: every sequence is cut into chunks of C = 64 steps (a packed sequence is padded to a whole
number of chunks, so no chunk crosses a boundary; padding has s = 0 and g = 0, so it neither writes nor
decays). All work that does not depend on the carried state is batched over every chunk at once; only the
state scan (one multiply-add per chunk) is a Python loop.

Numerics. Every decay factor is exp of a segment sum of gates, sum_{j < i <= t} g_i <= 0, so nothing overflows
however strong the gates are, and each segment sum adds up its own gates only (`segment_sums`): a difference of two
cumulative sums would cancel when a strong gate precedes the segment (g = -1000 followed by layer gates of -0.1
lost them to float32 rounding: 1e-4 off in o, 1000 times the token loop's float32 error) and give NaN for g = -inf.
- inter-chunk reads use exp(sum from the chunk's first step to t), state writes exp(sum over j < i <= last step);
- intra-chunk, each chunk is split into sub-blocks of 16 steps. For a query t in sub-block a and a key j in an
  earlier sub-block b, the segment (j, t] splits at the first step of a into (j, end of b] + whole sub-blocks
  between + [first step of a, t], so the decay is a product of a query factor and a key factor, both <= 1 (the
  sub-block form of GLA kernels). Inside a diagonal sub-block the [16, 16, M] pairwise decay is formed directly.
The two passes share the same decay tensors: pass 1 (gate on its value dim M) and pass 2 (gate on its key
dim M) read the same key factors and diagonal decays.

Non-finite inputs (gsa/ops/nonfinite.py) are set to 0 before the dense products and NaN is put back where they
reach, so a NaN or inf at step j leaves every output before j as it is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gsa.ops.nonfinite import sanitize
from gsa.ops.validation import slot_read_fn

CHUNK_SIZE = 64
SUB_SIZE = 16
# Gates below -G_FLOOR are computed as -G_FLOOR: exactly the same function, as exp of any segment sum holding one is 0
# in float64 (below -745) and float32 alike, and it keeps -inf (alpha = 0, a full reset) out of segment_sums.
G_FLOOR = 1e4


class _Layout:
    """Where each token sits in the chunked buffer, and where each sequence's state starts and ends.

    rows: leading batch size of the chunked tensors (B, or 1 when packed); n_chunks: chunks per row;
    resets: chunk index -> (first, last) rows of initial_state to load there; ends: chunk index -> same,
    for final states; dst: for packed input, the buffer position of every token.
    """

    def __init__(self, B: int, T: int, offsets: list[int] | None, C: int, device):
        self.B, self.T, self.C = B, T, C
        if offsets is None:
            self.rows, self.n_chunks = B, math.ceil(T / C)
            self.resets = {0: (0, B)}
            self.ends = {self.n_chunks - 1: (0, B)}
            self.dst = None
            return
        self.rows = 1
        starts, dst, c = [], [], 0
        self.resets, self.ends = {}, {}
        for n, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
            nc = math.ceil((b - a) / C)
            self.resets[c] = (n, n + 1)
            self.ends[c + nc - 1] = (n, n + 1)
            dst.append(torch.arange(c * C, c * C + (b - a)))
            starts.append(c)
            c += nc
        self.n_chunks = c
        self.dst = torch.cat(dst).to(device)

    def to_chunks(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[B, T, *rest] -> [rows, n_chunks, C, *rest] in `dtype`, zero-padded."""
        x = x.to(dtype)
        if self.dst is None:
            pad = self.n_chunks * self.C - self.T
            x = F.pad(x, (0, 0) * (x.ndim - 2) + (0, pad))
            return x.view(self.rows, self.n_chunks, self.C, *x.shape[2:])
        buf = x.new_zeros(self.n_chunks * self.C, *x.shape[2:]).index_copy(0, self.dst, x[0])
        return buf.view(1, self.n_chunks, self.C, *x.shape[2:])

    def from_chunks(self, x: torch.Tensor) -> torch.Tensor:
        """[rows, n_chunks, C, *rest] -> [B, T, *rest]."""
        x = x.reshape(self.rows, self.n_chunks * self.C, *x.shape[3:])
        if self.dst is None:
            return x[:, : self.T]
        return x[0, self.dst][None]


def segment_sums(x: torch.Tensor) -> torch.Tensor:
    """x [..., L, M] -> S [..., L (t), L (j), M] with S[t, j] = sum_{j < i <= t} x_i (0 for j >= t).

    One product with a 0/1 matrix: each entry sums its own segment's terms (the others are multiplied by exact zeros),
    so for same-signed x (log gates) it is accurate to L roundings of itself, however large the terms before the
    segment are. x must be finite (0 * inf = NaN).
    """
    L = x.shape[-2]
    i = torch.arange(L, device=x.device)
    picks = (i[None, :, None] < i[None, None, :]) & (i[None, None, :] <= i[:, None, None])  # [t, j, i]: j < i <= t
    return torch.matmul(picks.to(x.dtype).view(L * L, L), x).view(*x.shape[:-2], L, L, x.shape[-1])


def _scan(update: torch.Tensor, decay: torch.Tensor, h0: torch.Tensor, layout: _Layout):
    """Carry a state across chunks: h <- h * decay_c + update_c, restarting at each sequence's first chunk.

    update: [R, H, N, X, Y]; decay: [R, H, N, X, Y]-broadcastable; h0: [num_sequences, H, X, Y].
    Returns the state entering each chunk [R, H, N, X, Y] and the final state per sequence [num_sequences, H, X, Y].
    """
    entering, finals = [], []
    h = None
    for c in range(layout.n_chunks):
        if c in layout.resets:
            a, b = layout.resets[c]
            h = h0[a:b]
        entering.append(h)
        h = h * decay[:, :, c] + update[:, :, c]
        if c in layout.ends:
            finals.append(h)
    return torch.stack(entering, dim=2), torch.cat(finals, dim=0)


def chunk_gsa_torch(q, k, v, s, g, scale: float, initial_state, output_final_state: bool, offsets, *,
                    chunk_size=CHUNK_SIZE, slot_read: str = "softmax"):
    """The torch backend on validated inputs (g not None; ABC is converted by the caller).

    q: [B, T, HQ, K], k: [B, T, H, K], v: [B, T, H, V], s, g: [B, T, H, M]; offsets: host cu_seqlens or None.
    Returns o [B, T, HQ, V] in q.dtype and (hk [N, H, K, M], hv [N, H, M, V]) or None.
    """
    B, T, HQ, K = q.shape
    H, V, M = k.shape[2], v.shape[3], s.shape[3]
    G = HQ // H
    (q, k, v, s, g), nonfinite = sanitize(q, k, v, s, g, offsets)
    cd = torch.float64 if q.dtype == torch.float64 else torch.float32
    C = chunk_size
    BS = min(SUB_SIZE, C)
    NS = C // BS
    lay = _Layout(B, T, offsets, C, q.device)
    R, N = lay.rows, lay.n_chunks
    n_seq = B if offsets is None else len(offsets) - 1

    # [R, N, C, H, D] -> [R, H, N, C, D]; q additionally splits its heads into [H, G] (kv head, group member).
    # Made contiguous once here: every einsum below would otherwise copy its permuted operands again.
    qc = (lay.to_chunks(q, cd).view(R, N, C, H, G, K).permute(0, 3, 4, 1, 2, 5) * scale).contiguous()  # [R, H, G, N, C, K]
    kc, vc, sc, gc = (lay.to_chunks(x, cd).permute(0, 3, 1, 2, 4).contiguous() for x in (k, v, s, g))

    # Decays: exp of segment sums of gates, each added up from its own gates (see Numerics above).
    gs = gc.clamp_min(-G_FLOOR).view(R, H, N, NS, BS, M)
    ss = sc.view(R, H, N, NS, BS, M)
    g_in = gs.cumsum(dim=-2)  # [R, H, N, NS, BS, M] from the sub-block's first step to t
    q_decay = torch.exp(g_in)
    g_pair = segment_sums(gs)  # [R, H, N, NS, BS(t), BS(j), M] over j < i <= t (0 for j >= t)
    g_out = g_pair[..., -1, :, :]  # [R, H, N, NS, BS(j), M] from j (excluded) to the sub-block's last step
    g_between = segment_sums(g_in[..., -1, :])  # [R, H, N, NS(c), NS(b), M] whole sub-blocks b < i <= c
    # key factor for (query sub-block a, key sub-block b < a): s_j * exp(sum over j < i < first step of a)
    earlier = torch.ones(NS, NS, dtype=torch.bool, device=q.device).tril(-1)  # [a, b]: b < a
    e_off = g_out[:, :, :, None] + F.pad(g_between[..., :-1, :, :], (0, 0, 0, 0, 1, 0))[..., None, :]
    k_off = ss[:, :, :, None] * torch.exp(e_off.masked_fill(~earlier[:, :, None, None], float("-inf")))
    # diagonal sub-blocks: s_j * exp(sum over j < i <= t) for j <= t
    causal = torch.ones(BS, BS, dtype=torch.bool, device=q.device).tril()  # [t, j]
    s_diag = torch.where(causal[:, :, None], ss[..., None, :, :] * torch.exp(g_pair), 0)

    # What each chunk writes into the carried states, and the states entering each chunk.
    # [R, H, N, C, M]: s_j * exp(sum over j < i <= the chunk's last step)
    s_write = sc * torch.exp(g_out + g_between[..., -1:, :, :].transpose(-2, -3)).view(R, H, N, C, M)
    if initial_state is None:
        hk0 = qc.new_zeros(n_seq, H, K, M)
        hv0 = qc.new_zeros(n_seq, H, M, V)
    else:
        hk0, hv0 = initial_state[0].to(cd), initial_state[1].to(cd)
    Gl = gs.view(R, H, N, C, M).cumsum(dim=3)  # [R, H, N, C, M] from the chunk's first step to t
    alpha = torch.exp(Gl[:, :, :, -1])  # [R, H, N, M]
    hk_in, hk = _scan(torch.einsum("rhnck,rhncm->rhnkm", kc, s_write), alpha[..., None, :], hk0, lay)
    hv_in, hv = _scan(torch.einsum("rhncm,rhncv->rhnmv", s_write, vc), alpha[..., :, None], hv0, lay)

    # Pass 1: scores of the query against the slots' keys, then softmax over slots (or as they are: slot_read).
    qk = torch.einsum("rhgnck,rhnjk->rhgncj", qc, kc).view(R, H, G, N, NS, BS, NS, BS)
    a_off = torch.einsum("rhgnatbj,rhnabjm->rhgnatm", qk, k_off) * q_decay[:, :, None]
    qk_diag = qk.diagonal(dim1=4, dim2=6).permute(0, 1, 2, 3, 6, 4, 5)  # [R, H, G, N, NS, BS, BS]
    a_diag = torch.einsum("rhgnatj,rhnatjm->rhgnatm", qk_diag, s_diag)
    Gl_exp = torch.exp(Gl)[:, :, None]  # [R, H, 1, N, C, M] what is left of the entering state at step t
    a_inter = Gl_exp * torch.einsum("rhgnck,rhnkm->rhgncm", qc, hk_in)
    p = slot_read_fn(slot_read)((a_off + a_diag).reshape(R, H, G, N, C, M) + a_inter)

    # Pass 2: read the slots' values with the slot weights p.
    ps = p.reshape(R, H, G, N, NS, BS, M)
    w_off = torch.einsum("rhgnatm,rhnabjm->rhgnatbj", ps * q_decay[:, :, None], k_off).reshape(R, H, G, N, C, C)
    w_diag = torch.einsum("rhgnatm,rhnatjm->rhgnatj", ps, s_diag)
    o = torch.matmul(w_off, vc[:, :, None])  # [R, H, G, N, C, V]
    o = o + torch.einsum("rhgnatj,rhnajv->rhgnatv", w_diag, vc.view(R, H, N, NS, BS, V)).reshape(R, H, G, N, C, V)
    o = o + torch.einsum("rhgncm,rhnmv->rhgncv", p * Gl_exp, hv_in)

    o = lay.from_chunks(o.permute(0, 3, 4, 1, 2, 5).reshape(R, N, C, HQ, V)).to(q.dtype)
    return nonfinite.poison(o, (hk, hv) if output_final_state else None)
