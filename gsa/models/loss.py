"""The language-model loss without float32 copies of the logits.

`F.cross_entropy` on bf16 logits needs them in float32 first: at 16K tokens and a 32000-word vocabulary that is a
2.1 GB copy, and log-softmax keeps another 2.1 GB float32 output for the backward. `cross_entropy_rows` keeps only
each row's log-sum-exp and works through the rows in chunks of at most ~256 MB of float32, in the forward and again
in the backward (which recomputes softmax from the logits it keeps anyway), so the float32 work never holds more than
one chunk. Same function and gradient as `F.cross_entropy(logits.float(), target)` (mean over the targets that are
not ignore_index), each computed in float32 and rounded once to the logits' dtype.
"""

from __future__ import annotations

import torch

IGNORE = -100
CHUNK_ELEMENTS = 1 << 26  # float32 elements a chunk (256 MB)


def _chunks(rows: int, vocab: int):
    step = max(1, CHUNK_ELEMENTS // max(1, vocab))
    return [slice(i, min(i + step, rows)) for i in range(0, rows, step)]


class _CrossEntropyRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target):
        wide = torch.promote_types(logits.dtype, torch.float32)
        keep = target != IGNORE
        safe = torch.where(keep, target, 0)
        lse = torch.empty(logits.shape[0], dtype=wide, device=logits.device)
        for r in _chunks(*logits.shape):
            lse[r] = torch.logsumexp(logits[r].to(wide), dim=-1)
        picked = logits.gather(1, safe[:, None])[:, 0].to(wide)
        count = keep.sum()
        loss = torch.where(keep, lse - picked, 0).sum() / count  # nan with no target, as F.cross_entropy
        ctx.save_for_backward(logits, safe, keep, lse, count)
        return loss

    @staticmethod
    def backward(ctx, grad):
        logits, safe, keep, lse, count = ctx.saved_tensors
        wide = lse.dtype
        scale = torch.where(keep, grad.to(wide) / count.clamp(min=1), 0)  # [N]: d loss / d row
        out = torch.empty_like(logits)
        for r in _chunks(*logits.shape):
            p = torch.exp(logits[r].to(wide) - lse[r, None])  # softmax, [rows, vocab]
            p.scatter_add_(1, safe[r, None], torch.full_like(lse[r, None], -1.0))
            out[r] = (p * scale[r, None]).to(logits.dtype)
        return out, None


def cross_entropy_rows(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits [N, vocab] (any float dtype, computed in at least float32) against target [N]
    (int64; IGNORE = -100 rows count for nothing). A float32 scalar (float64 for float64 logits)."""
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"cross_entropy_rows takes logits [N, vocab] and target [N], got {tuple(logits.shape)} and "
                         f"{tuple(target.shape)}")
    return _CrossEntropyRows.apply(logits, target)
