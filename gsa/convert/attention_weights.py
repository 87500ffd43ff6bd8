"""The teacher's attention weights, and the two things a converted student takes from them: learned feature maps
fitted to them (`feature_map_loss`, the Hedgehog objective) and each head's attention span (`attention_spans`, for
gsa.convert.gate_init).

The teacher's weights are recomputed from its own layers on the input each attention layer saw (gsa.convert.distill's
hooks): q and k from its projections, its RoPE (the (cos, sin) its decoder passed in), its scale, grouped kv heads
repeated as transformers' repeat_kv does (query head h reads kv head h // (HQ / H), as GSA's groups do), a causal
mask and the padding mask. Tests check the recomputation against the teacher's own layer output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gsa.convert.distill import teacher_attention_io


def _allowed(T: int, attention_mask: torch.Tensor | None, device) -> torch.Tensor:
    """[B or 1, 1, T, T] bool: key j is visible to query i (j <= i, j not padding). A padded query sees itself, so
    that no row is empty (its loss is left out by the caller)."""
    causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()
    if attention_mask is None:
        return causal[None, None]
    keys = attention_mask.to(torch.bool)[:, None, None, :]
    return (causal & keys) | torch.eye(T, dtype=torch.bool, device=device)


def _causal_log_softmax(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(scores.float().masked_fill(~allowed, float("-inf")), dim=-1)


def _float32(x: torch.Tensor):
    """Autocast off on x's device: the trainer's bf16 autocast would run the projections and q . k in bf16 and
    move the weights by ~1e-2 (their float32 casts alone do not stop it)."""
    return torch.autocast(x.device.type, enabled=False)


def teacher_log_weights(attn: nn.Module, x: torch.Tensor, rope, attention_mask: torch.Tensor | None = None
                        ) -> torch.Tensor:
    """log of a teacher attention layer's weights, [B, HQ, T, T] float32 (-inf where masked).

    attn: a Llama / Mistral / Qwen2 self_attn module; x: its input [B, T, d]; rope: the (cos, sin) it was given.
    Computed in float32 under autocast too (a float32 teacher's weights)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    B, T, _ = x.shape
    hd = attn.head_dim
    with _float32(x):
        q = attn.q_proj(x).view(B, T, -1, hd).transpose(1, 2)
        k = attn.k_proj(x).view(B, T, -1, hd).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, *rope)
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        scores = (q.float() @ k.float().transpose(-1, -2)) * attn.scaling
        return _causal_log_softmax(scores, _allowed(T, attention_mask, x.device))


def student_log_weights(attn: nn.Module, x: torch.Tensor, attention_mask: torch.Tensor | None = None
                        ) -> torch.Tensor:
    """log of what a converted GSA layer's read would weigh each past token with if every token had a slot of its
    own and nothing were forgotten: causal softmax(scale * phi(q) phi(k)^T), [B, HQ, T, T] float32.

    attn: a gsa.nn.GatedSlotAttention (its q, k after its feature map, learned maps included); x: [B, T, d]. The
    slot read is softmax(scale * q . Hk), so this is the kernel its feature maps shape; the slots and gates then
    compress it (stage "attention" fits those). In the student's own dtype (float32 for the trainer's) under
    autocast too, as the teacher's weights it is compared with."""
    B, T, _ = x.shape
    with _float32(x):
        q, k, *_ = attn._projections(x.to(attn.q_proj.weight.dtype))
        q = q.view(B, T, attn.num_heads, attn.head_k_dim).transpose(1, 2)
        k = k.view(B, T, attn.num_kv_heads, attn.head_k_dim).transpose(1, 2)
        k = k.repeat_interleave(attn.num_heads // attn.num_kv_heads, dim=1)
        scores = (q.float() @ k.float().transpose(-1, -2)) * attn.scale
        return _causal_log_softmax(scores, _allowed(T, attention_mask, x.device))


def _row_kl(log_t: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    """KL(t || s) of each row, [B, HQ, T]; masked entries (t = 0) add nothing."""
    terms = log_t.exp() * (log_t - log_s)
    return terms.masked_fill(torch.isinf(log_t), 0.0).sum(-1)


def _mean_over_queries(per_row: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """per_row [B, HQ, T] -> the mean over heads and real query positions."""
    if attention_mask is None:
        return per_row.mean()
    keep = attention_mask.to(torch.bool)[:, None, :].expand_as(per_row)
    return per_row[keep].mean()


def feature_map_loss(student: nn.Module, teacher: nn.Module, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The Hedgehog (Zhang et al. 2024) fit: mean over layers of KL(teacher weights || student weights) per query
    row (student_log_weights: the student's q/k feature maps on the teacher's input to each layer), averaged over
    heads and real query positions. input_ids, attention_mask: [B, T]. Returns a float32 scalar; gradients reach
    the student's q/k path only (its learned maps, or q_proj / k_proj if left trainable).

    The teacher's weights use RoPE; the student's have no positions (GSA's order comes from its gates), so the fit
    finds the content-only part of each head that the maps can express."""
    if len(student.model.layers) != len(teacher.model.layers):
        raise ValueError("student and teacher must have the same number of layers")
    inputs, _, ropes = teacher_attention_io(teacher, input_ids, attention_mask)
    losses = []
    for block, t_layer, x, rope in zip(student.model.layers, teacher.model.layers, inputs, ropes):
        with torch.no_grad():
            log_t = teacher_log_weights(t_layer.self_attn, x, rope, attention_mask)
        log_s = student_log_weights(block.attn, x, attention_mask)
        losses.append(_mean_over_queries(_row_kl(log_t, log_s), attention_mask))
    return torch.stack(losses).mean()


def _distance_sums(weights: torch.Tensor, attention_mask: torch.Tensor | None, sinks: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """weights [B, HQ, T, T] -> (sum w_ij (i - j), sum w_ij), each [HQ] float32, over the real queries i and the real
    keys j past each row's first `sinks` real tokens."""
    B, HQ, T, _ = weights.shape
    pos = torch.arange(T, device=weights.device, dtype=torch.float32)
    distance = (pos[:, None] - pos[None, :]).clamp(min=0)  # [T, T]: i - j
    if attention_mask is None:
        real = torch.ones(B, T, dtype=torch.bool, device=weights.device)
    else:
        real = attention_mask.to(torch.bool)
    rank = real.long().cumsum(-1) - 1  # each token's position among its row's real tokens (left padding)
    keys = (real & (rank >= sinks)).float()[:, None, None, :]  # [B, 1, 1, T]: real keys past the sinks
    queries = real.float()[:, None, :]  # [B, 1, T]
    w = weights.float() * keys
    return ((w * distance).sum(-1) * queries).sum((0, 2)), (w.sum(-1) * queries).sum((0, 2))


def _ratio(moved: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    return moved / mass.clamp(min=torch.finfo(torch.float32).tiny)  # no mass left: 0, not nan


def mean_distance(weights: torch.Tensor, attention_mask: torch.Tensor | None = None, sinks: int = 0
                  ) -> torch.Tensor:
    """weights [B, HQ, T, T] (rows over keys, causal) -> [HQ] float32: the mean distance i - j of the attention mass
    that does not go to the first `sinks` real tokens, sum w_ij (i - j) / sum w_ij over the real queries i and the
    keys j past the sinks. Sinks are left out because a head that parks most of its weight on the first token (an
    attention sink: Xiao et al. 2023, "Efficient Streaming Language Models with Attention Sinks") reads nothing
    from it, yet that weight alone puts its mean distance near i / 2: on SmolLM2-135M every head then measured as
    long-range (median 140 tokens on 512-token windows, above an even spread's 128), and slots initialised to those
    horizons trained to a worse student than the default gates (docs/convert.md, "Pure student: ablation ladder").
    sinks = 0: the plain mean distance (each real row's weights sum to 1)."""
    return _ratio(*_distance_sums(weights, attention_mask, sinks))


@torch.no_grad()
def attention_spans(teacher: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    sinks: int = 4, batch_size: int | None = None) -> torch.Tensor:
    """[L, H] float32: each layer's and kv head's mean attention distance (`mean_distance`: the weight on the first
    `sinks` real tokens left out), pooled over the query heads of its group, the batch and the real query positions;
    batch_size rows of input_ids [N, T] at a time (None: all), the same result either way. With sinks = 0, a head
    spread evenly over its causal past scores (T - 1) / 4 on windows of T tokens; one that reads the current token
    alone scores 0."""
    if sinks < 0:
        raise ValueError(f"sinks must be >= 0, got {sinks}")
    n = len(input_ids)
    step = n if batch_size is None else batch_size
    moved, mass = 0.0, 0.0
    for i in range(0, n, step):
        mask = None if attention_mask is None else attention_mask[i:i + step]
        inputs, _, ropes = teacher_attention_io(teacher, input_ids[i:i + step], mask)
        sums = [_distance_sums(teacher_log_weights(layer.self_attn, x, rope, mask).exp(), mask, sinks)
                for layer, x, rope in zip(teacher.model.layers, inputs, ropes)]
        moved = moved + torch.stack([m for m, _ in sums])  # [L, HQ]
        mass = mass + torch.stack([w for _, w in sums])
    attn = teacher.model.layers[0].self_attn
    H = attn.k_proj.out_features // attn.head_dim
    return _ratio(moved.view(len(moved), H, -1).sum(-1), mass.view(len(mass), H, -1).sum(-1))
