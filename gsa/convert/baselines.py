"""The training-free baseline a converted model must beat: the teacher itself, restricted to a sliding window of
recent tokens plus a few "sink" tokens at the start (StreamingLLM-style; the T2R results use 64 + 4).

Here the restriction is an attention mask over the full sequence: token i attends to token j <= i when
i - j < window or j < sinks (positions counted over real tokens, so left padding is handled). RoPE positions stay
the original ones (StreamingLLM re-numbers positions inside its cache; with a mask there is nothing to re-number),
and the receptive field still grows by `window` per layer, as it does for any sliding-window Transformer.
"""

from __future__ import annotations

import torch
from torch import nn


def sink_window_mask(attention_mask: torch.Tensor, window: int, sinks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """attention_mask: [B, T] (1 = token, 0 = padding) -> (allowed [B, 1, T, T] bool, position_ids [B, T]).

    allowed[b, 0, i, j]: query i may read key j. A padded query reads only itself (its output is ignored), so no
    row of the mask is empty.
    """
    if window < 1 or sinks < 0:
        raise ValueError(f"window must be >= 1 and sinks >= 0, got window={window}, sinks={sinks}")
    real = attention_mask.to(torch.bool)
    pos = real.long().cumsum(-1) - 1  # [B, T] index among real tokens (-1 before the first)
    T = real.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=real.device).tril()
    distance = pos[:, :, None] - pos[:, None, :]  # [B, T, T], query minus key
    allowed = causal & real[:, None, :] & ((distance < window) | (pos[:, None, :] < sinks))
    allowed |= torch.eye(T, dtype=torch.bool, device=real.device)
    return allowed[:, None], pos.clamp(min=0)


def sink_window_logits(
    teacher: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    window: int = 64,
    sinks: int = 4,
) -> torch.Tensor:
    """Logits [B, T, vocab] of a Hugging Face causal LM that sees only `sinks` first and `window` recent tokens.

    input_ids, attention_mask: [B, T] (attention_mask: 1 = token, 0 = padding; None = all tokens).
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    allowed, position_ids = sink_window_mask(attention_mask, window, sinks)
    return teacher(input_ids=input_ids, attention_mask=allowed, position_ids=position_ids, use_cache=False).logits
