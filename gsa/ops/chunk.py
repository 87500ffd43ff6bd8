"""Chunked GSA in plain PyTorch: the CPU backend (GSA_SPEC.md section 2). Differentiable through autograd.

Layout inside: every sequence is cut into chunks of C = 64 steps (a packed sequence is padded to a whole
number of chunks, so no chunk crosses a boundary; padding has s = 0 and g = 0, so it neither writes nor
decays). All work that does not depend on the carried state is batched over every chunk at once; only the
state scan (one multiply-add per chunk) is a Python loop.

Numerics. With local cumulative gates Gl (restarting at each chunk) every factor below is exp of a
non-positive number, so nothing overflows however strong the gates are:
- inter-chunk reads use exp(Gl_t) and state writes use exp(Gl_last - Gl_j);
- intra-chunk, each chunk is split into sub-blocks of 16 steps. For a query in sub-block a and a key in an
  earlier sub-block b, exp(Gl_t - Gl_j) = exp(Gl_t - Gl_r) * exp(Gl_r - Gl_j) with r the first step of a,
  and r lies between j and t, so both factors are <= 1 (the sub-block form of GLA kernels). Inside a
  diagonal sub-block the [16, 16, M] pairwise decay is formed directly.
The two passes share the same decay tensors: pass 1 (gate on its value dim M) and pass 2 (gate on its key
dim M) read the same s_j * exp(Gl_r - Gl_j) and s_j * exp(Gl_t - Gl_j).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gsa.ops.validation import slot_read_fn

CHUNK_SIZE = 64
SUB_SIZE = 16


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


def chunk_gsa(q, k, v, s, g, scale: float, initial_state, output_final_state: bool, offsets, *, chunk_size=CHUNK_SIZE,
              slot_read: str = "softmax"):
    """The torch backend on validated inputs (g not None; ABC is converted by the caller).

    q: [B, T, HQ, K], k: [B, T, H, K], v: [B, T, H, V], s, g: [B, T, H, M]; offsets: host cu_seqlens or None.
    Returns o [B, T, HQ, V] in q.dtype and (hk [N, H, K, M], hv [N, H, M, V]) or None.
    """
    B, T, HQ, K = q.shape
    H, V, M = k.shape[2], v.shape[3], s.shape[3]
    G = HQ // H
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

    Gl = gc.cumsum(dim=3)  # [R, H, N, C, M] local cumulative log gate
    G_last = Gl[:, :, :, -1]  # [R, H, N, M]
    Gs = Gl.view(R, H, N, NS, BS, M)
    ss = sc.view(R, H, N, NS, BS, M)
    Gr = Gs[:, :, :, :, :1]  # [R, H, N, NS, 1, M] reference point: first step of each sub-block
    q_decay = torch.exp(Gs - Gr)  # [R, H, N, NS, BS, M]
    # key factor for (query sub-block a, key sub-block b < a): s_j * exp(Gl_r(a) - Gl_j)
    earlier = torch.ones(NS, NS, dtype=torch.bool, device=q.device).tril(-1)  # [a, b]: b < a
    e_off = Gr[:, :, :, :, None] - Gs[:, :, :, None]  # [R, H, N, NS(a), NS(b), BS(j), M]
    e_off = e_off.masked_fill(~earlier[:, :, None, None], float("-inf"))
    k_off = ss[:, :, :, None] * torch.exp(e_off)
    # diagonal sub-blocks: s_j * exp(Gl_t - Gl_j) for j <= t
    causal = torch.ones(BS, BS, dtype=torch.bool, device=q.device).tril()  # [t, j]
    e_diag = (Gs[..., :, None, :] - Gs[..., None, :, :]).masked_fill(~causal[:, :, None], float("-inf"))
    s_diag = ss[..., None, :, :] * torch.exp(e_diag)  # [R, H, N, NS, BS(t), BS(j), M]

    # What each chunk writes into the carried states, and the states entering each chunk.
    s_write = sc * torch.exp(G_last[:, :, :, None] - Gl)  # [R, H, N, C, M]
    if initial_state is None:
        hk0 = qc.new_zeros(n_seq, H, K, M)
        hv0 = qc.new_zeros(n_seq, H, M, V)
    else:
        hk0, hv0 = initial_state[0].to(cd), initial_state[1].to(cd)
    alpha = torch.exp(G_last)
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
    return o, ((hk, hv) if output_final_state else None)
