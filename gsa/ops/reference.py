"""Two independent references for Gated Slot Attention (docs/algorithm.md, 'Recurrence').

- `recurrent_reference`: the recurrence run token by token, exactly as written in the spec. Its ungated (ABC)
  mode keeps a running log-normaliser z_t = logaddexp(z_{t-1}, s_t).
- `parallel_reference`: the closed form, materialising the pairwise decay D[t, j, m] = exp(G_t - G_j) for the
  whole sequence. Its ABC mode uses logcumsumexp.

They share no code beyond argument checking, so agreement between them (tested in float64) is evidence that
both are right. Both take the op's arguments, compute in float64 for float64 inputs and in float32 otherwise,
and are differentiable by autograd. They cost O(T) Python steps and O(T^2 M) memory respectively: for tests,
not for production. `recurrent_reference` also serves as the CPU decode path for very short inputs.
"""

from __future__ import annotations

import torch

from gsa.ops.validation import Dims, check_inputs, slot_read_fn, state_dtype


def _segments(dims: Dims, offsets: list[int] | None) -> list[tuple[slice, slice]]:
    """(batch slice, time slice) per independent group: the whole batch at once, or one packed sequence each."""
    if offsets is None:
        return [(slice(None), slice(0, dims.T))]
    return [(slice(0, 1), slice(offsets[n], offsets[n + 1])) for n in range(dims.N)]


def _initial(initial_state, dims: Dims, n: slice, cd: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    if initial_state is None:
        rows = dims.B if n == slice(None) else 1
        return (
            torch.zeros(rows, dims.H, dims.K, dims.M, dtype=cd, device=device),
            torch.zeros(rows, dims.H, dims.M, dims.V, dtype=cd, device=device),
        )
    return initial_state[0][n].to(cd), initial_state[1][n].to(cd)


def _run(fn, q, k, v, s, g, scale, initial_state, output_final_state, cu_seqlens, slot_read, checked=None):
    read = slot_read_fn(slot_read)
    dims, offsets = checked or check_inputs(q, k, v, s, g, scale, initial_state, output_final_state, cu_seqlens)
    scale = dims.K**-0.5 if scale is None else float(scale)
    cd = state_dtype(q.dtype)
    outs, hks, hvs = [], [], []
    for i, (b, t) in enumerate(_segments(dims, offsets)):
        n = b if offsets is None else slice(i, i + 1)
        hk0, hv0 = _initial(initial_state, dims, n, cd, q.device)
        xs = [x[b, t].to(cd) if x is not None else None for x in (q, k, v, s, g)]
        o, hk, hv = fn(*xs, scale, hk0, hv0, dims.G, read)
        outs.append(o)
        hks.append(hk)
        hvs.append(hv)
    o = torch.cat(outs, dim=1).to(q.dtype)
    final = (torch.cat(hks), torch.cat(hvs)) if output_final_state else None
    return o, final


def _recurrent_segment(q, k, v, s, g, scale, hk, hv, G, read):
    """One group of rows, token by token. q [R, L, HQ, K], k [R, L, H, K], v [R, L, H, V], s/g [R, L, H, M]."""
    R, L, HQ, K = q.shape
    H = k.shape[2]
    z = None  # ABC running log-normaliser per slot
    outs = []
    for t in range(L):
        s_t = s[:, t]
        if g is None:
            z_new = s_t if z is None else torch.logaddexp(z, s_t)
            g_t = torch.zeros_like(s_t) if z is None else z - z_new
            s_t = torch.exp(s_t - z_new)
            z = z_new
        else:
            g_t = g[:, t]
        alpha = torch.exp(g_t)  # [R, H, M]
        hk = hk * alpha[:, :, None, :] + k[:, t, :, :, None] * s_t[:, :, None, :]
        q_t = q[:, t].reshape(R, H, G, K) * scale
        p = read(torch.einsum("rhgk,rhkm->rhgm", q_t, hk))
        hv = hv * alpha[:, :, :, None] + s_t[:, :, :, None] * v[:, t, :, None, :]
        outs.append(torch.einsum("rhgm,rhmv->rhgv", p, hv).reshape(R, HQ, -1))
    return torch.stack(outs, dim=1), hk, hv


def _parallel_segment(q, k, v, s, g, scale, hk0, hv0, G, read):
    """One group of rows in closed form (docs/algorithm.md, 'Closed form'), with a [L, L, M] decay per head."""
    R, L, HQ, K = q.shape
    H = k.shape[2]
    if g is None:
        z = torch.logcumsumexp(s, dim=1)
        s = torch.exp(s - z)
        g = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1] - z[:, 1:]], dim=1)
    Gc = torch.cumsum(g, dim=1)  # [R, L, H, M]
    future = torch.triu(torch.ones(L, L, dtype=torch.bool, device=q.device), diagonal=1)  # j > t
    diff = (Gc[:, :, None] - Gc[:, None, :]).masked_fill(future[None, :, :, None, None], float("-inf"))
    D = torch.exp(diff)  # [R, t, j, H, M]
    qg = q.reshape(R, L, H, G, K) * scale
    decay_in = torch.exp(Gc)[:, :, :, None, :]  # [R, L, H, 1, M]: what is left of the initial state at t
    qk = torch.einsum("rthgk,rjhk->rthgj", qg, k)
    A1 = torch.einsum("rthgj,rtjhm->rthgm", qk, s[:, None] * D)
    A1 = A1 + decay_in * torch.einsum("rthgk,rhkm->rthgm", qg, hk0)
    p = read(A1)
    w = torch.einsum("rthgm,rtjhm->rthgj", p, s[:, None] * D)  # mixing weight of value j at step t
    o = torch.einsum("rthgj,rjhv->rthgv", w, v) + torch.einsum("rthgm,rhmv->rthgv", p * decay_in, hv0)
    last = torch.exp(Gc[:, -1:] - Gc) * s  # [R, L, H, M]: s_j * exp(G_L - G_j)
    alpha_all = torch.exp(Gc[:, -1])  # [R, H, M]
    hk = hk0 * alpha_all[:, :, None, :] + torch.einsum("rjhk,rjhm->rhkm", k, last)
    hv = hv0 * alpha_all[:, :, :, None] + torch.einsum("rjhm,rjhv->rhmv", last, v)
    return o.reshape(R, L, HQ, -1), hk, hv


def recurrent_reference(
    q, k, v, s, g=None, *, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None,
    slot_read="softmax",
):
    """Token-by-token GSA. Same arguments and returns as `gsa.ops.gated_slot_attention`.

    q: [B, T, HQ, K], k: [B, T, H, K], v: [B, T, H, V], s, g: [B, T, H, M] (g=None: ABC mode).
    Returns o: [B, T, HQ, V] in q.dtype and, if asked, (hk [N, H, K, M], hv [N, H, M, V]).
    """
    return _run(_recurrent_segment, q, k, v, s, g, scale, initial_state, output_final_state, cu_seqlens, slot_read)


def recurrent_checked(checked: tuple[Dims, list[int] | None], q, k, v, s, g, *, scale, initial_state,
                      output_final_state, slot_read="softmax"):
    """`recurrent_reference` on inputs the op front-end has already checked (`checked` = check_inputs' result),
    so a short call (a decode step) does not validate twice."""
    return _run(_recurrent_segment, q, k, v, s, g, scale, initial_state, output_final_state, None, slot_read,
                checked=checked)


def parallel_reference(
    q, k, v, s, g=None, *, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None,
    slot_read="softmax",
):
    """Closed-form (matrix) GSA with an explicit [T, T, M] decay. Same arguments and returns as the op.

    A test reference: it takes differences of cumulative gates, so it needs finite inputs (g = -inf gives NaN, where
    `recurrent_reference` resets), and a NaN anywhere in a sequence reaches all of its outputs.
    """
    return _run(_parallel_segment, q, k, v, s, g, scale, initial_state, output_final_state, cu_seqlens, slot_read)
