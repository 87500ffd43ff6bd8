"""Non-finite inputs in a chunked backend: causal, like the recurrence.

In the token-by-token recurrence a NaN or inf at step j reaches only the outputs and states from step j on. A chunked
backend mixes whole chunks in dense products, where the entries of later steps are multiplied by exact zeros, and
0 * inf = NaN would spread a bad step back over every earlier output of its chunk. So the torch backend computes on
`sanitize`d inputs (every non-finite entry replaced by 0, which no product can spread) and then `Poison.apply`s NaN
to what the bad entries do reach:

- o[t, hq, :] when q[t, hq] has a non-finite entry, or any of k, v, s, g of kv head hq // G does at a step <= t of
  the same sequence;
- the final hk of a sequence and head when k, s or g had one, the final hv when v, s or g had one.

g = -inf is a valid gate (alpha = exp(g) = 0: forget everything), not a bad entry; NaN and +inf gates are bad.
This marks whole rows: where the recurrence keeps some entries finite (the other value columns of a bad v entry),
they are NaN here too. Nothing before a bad step changes, forward or backward.
"""

from __future__ import annotations

import torch


def _gate_ok(g: torch.Tensor) -> torch.Tensor:
    return (g == float("-inf")) | torch.isfinite(g)


def _seen(bad: torch.Tensor, offsets: list[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """bad [B, T, H] -> (seen [B, T, H]: a bad step at or before t in t's sequence, any [N, H]: per sequence)."""
    count = bad.to(torch.int32).cumsum(dim=1)
    if offsets is None:
        return count > 0, count[:, -1] > 0
    # packed (B == 1): a sequence counts from its own start
    ends = torch.tensor(offsets[1:], device=bad.device) - 1
    before = torch.cat([count.new_zeros(1, 1, count.shape[2]), count[:, ends[:-1]]], dim=1)  # [1, N, H]
    lengths = torch.tensor([b - a for a, b in zip(offsets[:-1], offsets[1:])], device=bad.device)
    seen = (count - before.repeat_interleave(lengths, dim=1)) > 0
    return seen, (count[0, ends] - before[0]) > 0


class Poison(torch.autograd.Function):
    """x with NaN where `mask` holds. Backward: the cotangent, except NaN where the mask holds and the cotangent is
    not 0, so a loss that reads a poisoned entry gets NaN gradients (as through the recurrence) while a loss that
    does not (o[:, :j] only, say) gets exact ones."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(mask)
        return x.masked_fill(mask, float("nan"))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return grad.masked_fill(mask & (grad != 0), float("nan")), None


class NonFinite:
    """Where the non-finite entries of one call's inputs reach: built by `sanitize`, applied by `poison`."""

    def __init__(self, o_mask: torch.Tensor, hk_mask: torch.Tensor, hv_mask: torch.Tensor):
        self.o_mask, self.hk_mask, self.hv_mask = o_mask, hk_mask, hv_mask

    def poison(self, o: torch.Tensor, final: tuple[torch.Tensor, torch.Tensor] | None):
        """o [B, T, HQ, V] and final states (hk [N, H, K, M], hv [N, H, M, V]) or None, with NaN where reached."""
        o = Poison.apply(o, self.o_mask[..., None])
        if final is not None:
            final = (Poison.apply(final[0], self.hk_mask[..., None, None]),
                     Poison.apply(final[1], self.hv_mask[..., None, None]))
        return o, final


def sanitize(q, k, v, s, g, offsets: list[int] | None):
    """(q, k, v, s, g) with non-finite entries (g: NaN and +inf) set to 0, and the NonFinite that marks what they
    reach. q [B, T, HQ, K], k [B, T, H, K], v [B, T, H, V], s, g [B, T, H, M]; offsets: host cu_seqlens or None.
    No data-dependent branch: the same ops run whether or not anything is bad (no sync, traceable)."""
    ok = [torch.isfinite(x) for x in (q, k, v, s)] + [_gate_ok(g)]
    q, k, v, s = (torch.where(m, x, 0) for m, x in zip(ok, (q, k, v, s)))
    g = torch.where(ok[4], g, 0)
    bad_q, bad_k, bad_v, bad_s, bad_g = (~m.all(dim=-1) for m in ok)
    bad_sg = bad_s | bad_g
    seen_hk, any_hk = _seen(bad_k | bad_sg, offsets)
    seen_hv, any_hv = _seen(bad_v | bad_sg, offsets)
    G = q.shape[2] // k.shape[2]
    o_mask = bad_q | (seen_hk | seen_hv).repeat_interleave(G, dim=2)  # [B, T, HQ]
    return (q, k, v, s, g), NonFinite(o_mask, any_hk, any_hv)
