"""Sliding-window softmax attention with sink tokens: the local half of a hybrid GSA layer.

A layer converted from a Transformer with `window_size > 0` (gsa.convert) keeps the teacher's own softmax attention,
with its RoPE, over the `window` most recent tokens and the first `sinks` tokens of each sequence (StreamingLLM's
attention sinks), and adds GSA's slot memory for what lies further back. LoLCATs and Liger pair a linear-attention
memory with a sliding window in the same way; the window alone is the training-free baseline of
`gsa.convert.baselines`, which this module reproduces exactly when the memory's share is zero.

Positions count real tokens only (left padding is skipped) and restart at each packed sequence. Decoding keeps a
fixed-size buffer of keys and values ("window state"), so the layer's state stays constant in size:

    k, v: [N, C, H, K] / [N, C, H, V] float32 (float64 for a float64 model), C = sinks + window + 1: entries
          0 .. sinks-1 hold the first tokens, the next `window` a ring of the most recent ones; the last entry
          receives the writes that are dropped;
    pos:  [N, C] int64, each entry's position (-1 = empty);
    count: [N] int64, the real tokens seen so far.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WindowState = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def rotary(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """x [B, T, heads, D] rotated by RoPE at positions pos [B, T] (the Hugging Face Llama convention: dimension i
    pairs with i + D / 2; angles and their cos/sin in float32 as there, float64 for a float64 x, then cast to x's
    dtype). D must be even."""
    D = x.shape[-1]
    acc = torch.promote_types(x.dtype, torch.float32)
    inv_freq = 1.0 / theta ** (torch.arange(0, D, 2, device=x.device, dtype=torch.int64).to(acc) / D)
    angles = pos.clamp(min=0).to(acc)[..., None] * inv_freq  # [B, T, D/2]
    emb = torch.cat((angles, angles), dim=-1)[:, :, None]  # [B, T, 1, D]
    cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def empty_window_state(batch: int, heads: int, key_dim: int, value_dim: int, window: int, sinks: int,
                       device: torch.device | str, dtype: torch.dtype = torch.float32) -> WindowState:
    """A window state with no tokens for `batch` sequences (see the module docstring for the layout); keys and
    values in `dtype` (float32, or float64 for a float64 model)."""
    C = sinks + window + 1
    f32 = dict(dtype=dtype, device=device)
    return (torch.zeros(batch, C, heads, key_dim, **f32), torch.zeros(batch, C, heads, value_dim, **f32),
            torch.full((batch, C), -1, dtype=torch.int64, device=device),
            torch.zeros(batch, dtype=torch.int64, device=device))


def token_positions(valid: torch.Tensor, cu_seqlens: torch.Tensor | None, count: torch.Tensor | None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """valid [B, T] bool (False = padding) -> (pos [B, T] int64, -1 at padding; row [B, T] int64, the sequence each
    token belongs to: its batch row, or with cu_seqlens [N + 1] (B == 1) its packed sequence). count [B]: tokens
    already seen by each row (decoding), None for none."""
    B, T = valid.shape
    if cu_seqlens is not None:
        t = torch.arange(T, device=valid.device)
        row = torch.searchsorted(cu_seqlens[1:].to(t.dtype), t, right=True)
        return (t - cu_seqlens.to(t.dtype)[row])[None], row[None]
    pos = valid.long().cumsum(1) - 1
    if count is not None:
        pos = pos + count[:, None]
    row = torch.arange(B, device=valid.device)[:, None].expand(B, T)
    return pos.masked_fill(~valid, -1), row


def window_mask(qpos: torch.Tensor, kpos: torch.Tensor, window: int, sinks: int,
                same_row: torch.Tensor | None = None) -> torch.Tensor:
    """qpos [B, T], kpos [B, S] (-1 = no token) -> allowed [B, T, S]: key j is at or before query i and within the
    window, or one of the first `sinks` tokens. same_row [B, T, S] restricts packed sequences to their own."""
    qp, kp = qpos[:, :, None], kpos[:, None, :]
    allowed = (kp >= 0) & (kp <= qp) & ((qp - kp < window) | (kp < sinks))
    return allowed if same_row is None else allowed & same_row


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, row: torch.Tensor,
                     window: int, sinks: int, scale: float, cache: WindowState | None = None,
                     packed: bool = False) -> torch.Tensor:
    """Softmax attention of each real token over its window and sinks.

    q [B, T, HQ, K], k [B, T, H, K] (both already rotated), v [B, T, H, V]; pos / row [B, T] from `token_positions`;
    cache: the window state of the tokens before these (decoding), read only; packed: the tokens are packed
    sequences (B == 1, row = sequence index), which never attend across a boundary. Returns o [B, T, HQ, V] in
    q's dtype, zero at padding. Grouped heads: query head i reads kv head i // (HQ / H).
    """
    B, T, HQ, _ = q.shape
    H = k.shape[2]
    keys, values, kpos = k, v, pos
    same_row = None
    if cache is not None:
        ck, cv, cpos, _ = cache
        keys = torch.cat((ck.to(k.dtype), k), dim=1)
        values = torch.cat((cv.to(v.dtype), v), dim=1)
        kpos = torch.cat((cpos, pos), dim=1)
    elif packed:
        same_row = row[:, :, None] == row[:, None, :]
    allowed = window_mask(pos, kpos, window, sinks, same_row)
    # a padded query reads its own (zeroed) entry, so no row of the mask is empty; its output is set to zero below
    valid = pos >= 0
    own = torch.arange(T, device=q.device) + (keys.shape[1] - T)
    allowed[:, torch.arange(T, device=q.device), own] |= ~valid
    G = HQ // H
    o = F.scaled_dot_product_attention(
        q.transpose(1, 2), keys.repeat_interleave(G, dim=2).transpose(1, 2),
        values.repeat_interleave(G, dim=2).transpose(1, 2), attn_mask=allowed[:, None], scale=scale,
    ).transpose(1, 2)
    return o * valid[:, :, None, None].to(o.dtype)


def banded_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, sinks: int,
                            scale: float) -> torch.Tensor:
    """`window_attention` for unpadded, unpacked rows that start at position 0 (training, a first prefill), with
    O(T (2W + S)) work instead of O(T^2): queries in blocks of W read the previous block, their own and the sinks.

    q [B, T, HQ, K], k [B, T, H, K] (rotated), v [B, T, H, V] -> o [B, T, HQ, V] in q's dtype.
    """
    B, T, HQ, K = q.shape
    H, V = k.shape[2], v.shape[3]
    W, S, G = window, min(sinks, T), HQ // H
    nb = -(-T // W)
    pad = nb * W - T
    dev = q.device
    # keys of block b: positions (b - 1) W ... (b + 1) W - 1 (a zero block before the first), then the sinks
    kb = F.pad(k, (0, 0, 0, 0, W, pad)).unfold(1, 2 * W, W).permute(0, 1, 4, 2, 3)  # [B, nb, 2W, H, K]
    vb = F.pad(v, (0, 0, 0, 0, W, pad)).unfold(1, 2 * W, W).permute(0, 1, 4, 2, 3)  # [B, nb, 2W, H, V]
    keys = torch.cat((k[:, None, :S].expand(B, nb, S, H, K), kb), dim=2)
    values = torch.cat((v[:, None, :S].expand(B, nb, S, H, V), vb), dim=2)
    b = torch.arange(nb, device=dev)[:, None]
    qpos = b * W + torch.arange(W, device=dev)  # [nb, W]
    kpos = torch.cat((torch.arange(S, device=dev).expand(nb, S), (b - 1) * W + torch.arange(2 * W, device=dev)), 1)
    allowed = window_mask(qpos, kpos.masked_fill(kpos >= T, -1), W, S)  # [nb, W, S + 2W]; past the end: no token
    # a sink copy only where its position is not among the block keys already (no key counted twice)
    in_blocks = torch.arange(S + 2 * W, device=dev) >= S
    allowed &= in_blocks | (kpos[:, None, :] < (b[:, :, None] - 1) * W)
    allowed |= qpos[:, :, None] >= T  # padding queries (sliced off) read everything, so no row is empty
    o = F.scaled_dot_product_attention(
        F.pad(q, (0, 0, 0, 0, 0, pad)).view(B * nb, W, HQ, K).transpose(1, 2),
        keys.repeat_interleave(G, dim=3).reshape(B * nb, S + 2 * W, HQ, K).transpose(1, 2),
        values.repeat_interleave(G, dim=3).reshape(B * nb, S + 2 * W, HQ, V).transpose(1, 2),
        attn_mask=allowed.repeat(B, 1, 1)[:, None], scale=scale,
    )  # [B * nb, HQ, W, V]
    return o.transpose(1, 2).reshape(B, nb * W, HQ, V)[:, :T]


def advance_window(cache: WindowState, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, row: torch.Tensor,
                   window: int, sinks: int, inplace: bool) -> WindowState:
    """The window state after tokens k [B, T, H, K], v [B, T, H, V] at pos / row [B, T] (`token_positions`).

    cache: the state before them, one entry per row (N sequences). inplace: write into cache's tensors (decoding
    from owned buffers: nothing is allocated for the state, no host synchronisation); otherwise they are not
    modified and a new state is returned. Only the first `sinks` and the last `window` tokens of each row are kept.
    """
    ck, cv, cpos, count = cache if inplace else tuple(t.clone() for t in cache)
    N, C = cpos.shape
    valid = pos >= 0
    count.index_add_(0, row.reshape(-1), valid.reshape(-1).long())
    last = count[row] - 1  # [B, T] the position of each row's newest token
    keep = valid & ((pos < sinks) | (pos > last - window))
    slot = torch.where(pos < sinks, pos, sinks + (pos - sinks).remainder(window))
    slot = torch.where(keep, slot, C - 1)  # dropped tokens all land in the spare last entry
    flat = (row * C + slot).reshape(-1)
    H = k.shape[2]
    ck.view(N * C, H, -1).index_copy_(0, flat, k.reshape(-1, H, k.shape[-1]).to(ck.dtype))
    cv.view(N * C, H, -1).index_copy_(0, flat, v.reshape(-1, H, v.shape[-1]).to(cv.dtype))
    cpos.view(-1).index_copy_(0, flat, torch.where(keep, pos, -1).reshape(-1))
    return ck, cv, cpos, count


def hybrid_window(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                  cu_seqlens: torch.Tensor | None, cache: WindowState | None, output_state: bool,
                  inplace_state: bool, window: int, sinks: int, scale: float, rope_theta: float
                  ) -> tuple[torch.Tensor, WindowState | None]:
    """The window half of a hybrid GSA layer: q [B, T, HQ, K], k [B, T, H, K], v [B, T, H, V] (the projections
    before the slots' feature map), mask [B, T] (True = token) or None, cache: the window state after the preceding
    tokens or None -> (o [B, T, HQ, V], the window state after these tokens when output_state, else None; `cache`
    itself, advanced, when inplace_state)."""
    B, T = q.shape[:2]
    valid = torch.ones(B, T, dtype=torch.bool, device=q.device) if mask is None else mask
    pos, row = token_positions(valid, cu_seqlens, None if cache is None else cache[3])
    q, k = rotary(q, pos, rope_theta), rotary(k, pos, rope_theta)
    if cache is None and mask is None and cu_seqlens is None:  # whole rows from position 0: O(T W) work
        o = banded_window_attention(q, k, v, window, sinks, scale)
    else:
        o = window_attention(q, k, v, pos, row, window, sinks, scale, cache, packed=cu_seqlens is not None)
    if not output_state:
        return o, None
    if cache is None:
        N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
        cache = empty_window_state(N, k.shape[2], k.shape[3], v.shape[3], window, sinks, q.device,
                                   torch.promote_types(k.dtype, torch.float32))
        inplace_state = True  # fresh buffers: nobody else holds them
    return o, advance_window(cache, k, v, pos, row, window, sinks, inplace_state)
