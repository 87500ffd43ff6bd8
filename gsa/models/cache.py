"""GSACache: the constant-size decoding state of a GSA model, as a transformers `Cache`."""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from gsa.nn.options import check_int
from gsa.nn.state import GSAState


class GSACacheLayer(CacheLayerMixin):
    """One layer's entry: its `GSAState` (None before the first token) and how many tokens it has consumed.

    Token counts are per layer (fla kept one global count, which was wrong while a forward was half-way through the
    layers). The key/value interface of `CacheLayerMixin` does not apply to a recurrent layer and raises.
    """

    is_compileable = False  # states are replaced, not written into fixed buffers; no static-cache mask path
    is_croppable = False  # a recurrent state cannot be rolled back to an earlier token
    supports_early_init = False  # nothing to preallocate from key/value shapes

    def __init__(self):
        super().__init__()
        self.state: GSAState | None = None
        self.num_tokens = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        raise NotImplementedError("GSACacheLayer holds a recurrent state; it is filled by GSACache.update_state")

    def update(self, key_states, value_states, *args, **kwargs):
        raise NotImplementedError("GSACacheLayer holds a recurrent state; use GSACache.update_state")

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        # GSA builds no attention mask; this is what an empty attention cache would answer.
        return query_length, 0

    def get_seq_length(self) -> int:
        return self.num_tokens

    def get_max_length(self) -> int:
        return -1  # no sequence dimension: the state has the same size at any length

    def reset(self) -> None:
        self.state = None
        self.num_tokens = 0

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.state is not None:
            self.state = self.state.map(lambda x: x.index_select(0, indices.to(x.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.state is not None:
            self.state = self.state.map(lambda x: x.repeat_interleave(repeats, dim=0))

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a GSA state cannot be cropped: the recurrence cannot be undone")


class GSACache(Cache):
    """Per-layer GSA states for B sequences: hk [B, H, K, M] and hv [B, H, M, V] in float32 (float64 for a float64
    model), plus the short-convolution inputs [B, W - 1, C] (q, k, v) when the model uses them.

    The model creates one when called with use_cache=True (and generate() does so); layers read `state(i)` and
    write `update_state(i, new_state, num_new_tokens)`. Supports beam search (`reorder_cache`) and batch
    expansion/selection. It cannot be cropped (no assisted decoding) and is not a static (compileable) cache.

    inplace_decode: after the first forward (which allocates the states), every later forward advances the
    cache's own state buffers in place instead of replacing them, so a decode step allocates no state (the op's
    `inplace_state`; a fixed-shape step that can be captured in a CUDA graph). Needs a float32 state (any model
    dtype but float64) and no autograd. Pass such a cache as `past_key_values` (also to generate()).
    """

    def __init__(self, num_layers: int, inplace_decode: bool = False):
        num_layers = check_int("GSACache num_layers", num_layers)
        super().__init__(layers=[GSACacheLayer() for _ in range(num_layers)])
        self.inplace_decode = inplace_decode

    def _layer(self, layer_idx: int) -> GSACacheLayer:
        if not 0 <= layer_idx < len(self.layers):
            raise IndexError(f"GSACache has {len(self.layers)} layers, got layer_idx={layer_idx}")
        return self.layers[layer_idx]

    def state(self, layer_idx: int) -> GSAState | None:
        """The state of layer `layer_idx` after the tokens seen so far, or None before the first token."""
        return self._layer(layer_idx).state

    def update_state(self, layer_idx: int, state: GSAState, num_new_tokens: int) -> None:
        """Replace layer `layer_idx`'s state with `state`, which has consumed `num_new_tokens` more tokens."""
        layer = self._layer(layer_idx)
        if layer.state is not None and layer.state.batch_size != state.batch_size:
            raise ValueError(f"layer {layer_idx}: state batch {state.batch_size} != cached {layer.state.batch_size}")
        layer.state = state
        layer.num_tokens += num_new_tokens

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens consumed by layer `layer_idx` (including left padding, as an attention cache would count it)."""
        return self._layer(layer_idx).num_tokens

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    def get_mask_sizes(self, query_length: int, layer_idx: int) -> tuple[int, int]:
        return self._layer(layer_idx).get_mask_sizes(query_length)

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a GSA state cannot be cropped: the recurrence cannot be undone")

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_croppable(self) -> bool:
        return False

    @property
    def batch_size(self) -> int:
        sizes = {layer.state.batch_size for layer in self.layers if layer.state is not None}
        if len(sizes) > 1:
            raise ValueError(f"GSACache layers disagree on the batch size: {sorted(sizes)}")
        return sizes.pop() if sizes else -1
