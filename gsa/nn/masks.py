"""Padding masks (attention_mask [B, T], 1 = token, 0 = padding): what the layer and the model accept.

Two ways a mask could be read wrongly without an error, both refused here:
- An additive mask. transformers' additive masks use 0 for "attend" and a large negative number (or -inf) for
  "masked". Masks here are taken as bool, integer or floating, with values 0 and 1 only, so any masked position of
  an additive mask is refused; a floating mask of zeros alone, which means "attend everywhere" as an additive mask
  and "no tokens" as a padding mask, is refused too.
- Padding between tokens, in a layer with a short convolution. The slot memories skip a padded position exactly
  (its gate is 1 and it writes nothing), but a convolution's taps count positions: after a gap they read the
  padding's zeros instead of the tokens before it, and right padding followed by a returned state leaves the
  padding in the convolution's state, which the next decoded token would read.
"""

from __future__ import annotations

import torch


def padding_mask(attention_mask: torch.Tensor, B: int, T: int) -> torch.Tensor:
    """attention_mask [B, T] (bool, or integer or floating with values 0 and 1) -> bool [B, T]; a ValueError /
    TypeError naming attention_mask otherwise. A non-bool mask costs one host sync (the value check; skipped
    inside torch.compile)."""
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a tensor, got {type(attention_mask).__name__}")
    if tuple(attention_mask.shape) != (B, T):
        raise ValueError(f"attention_mask must be [B, T] = {(B, T)}, got {tuple(attention_mask.shape)}")
    if attention_mask.dtype == torch.bool:
        return attention_mask
    if torch.compiler.is_compiling():  # reading the values would break the graph: checked in eager calls
        return attention_mask != 0
    if attention_mask.dtype.is_complex:
        raise TypeError(f"attention_mask must be bool, integer or floating (1 = token, 0 = padding), got "
                        f"{attention_mask.dtype}")
    ones = attention_mask == 1
    other = ~ones & (attention_mask != 0)
    if bool(other.any()):
        odd = attention_mask[other].unique()[:5].tolist()
        raise ValueError(f"attention_mask must hold 1 (token) and 0 (padding) only, got also {odd}: an additive "
                         "mask (0 = attend, large negative = masked) is not a padding mask")
    if attention_mask.dtype.is_floating_point and not bool(ones.any()):
        raise ValueError("attention_mask is a floating mask of zeros only: as a padding mask that is no tokens at "
                         "all, as an additive mask 'attend everywhere'; pass ones, or no mask, for all tokens")
    return ones


def check_contiguous_tokens(mask: torch.Tensor, returns_state: bool) -> None:
    """For a layer with a short convolution: every row of mask (bool [B, T]) holds its tokens in one run, padding
    on the left only when the state after the last position is returned (`returns_state`), on either side
    otherwise. One host sync."""
    if mask.shape[1] < 2 or torch.compiler.is_compiling():  # reading the mask would break a compiled graph
        return
    runs = mask[:, 0].long() + (~mask[:, :-1] & mask[:, 1:]).sum(1)  # runs of tokens in each row
    gap = runs > 1
    trailing = mask.any(1) & ~mask[:, -1]  # tokens, then padding at the end
    bad = gap | trailing if returns_state else gap
    if not bool(bad.any()):
        return
    row = int(bad.nonzero()[0, 0])
    if bool(gap[row]):
        raise ValueError(f"attention_mask row {row} has padding between tokens: a layer with a short convolution "
                         "needs each row's tokens in one run (pad on the left), since its taps would read the "
                         "padding in place of the tokens before it")
    raise ValueError(f"attention_mask row {row} ends in padding while a state is returned (use_cache / "
                     "output_state): a layer with a short convolution needs left padding there, since the padding "
                     "would sit in its convolution state")
