"""GSAModel and GSAForCausalLM: a Llama-style decoder with Gated Slot Attention (docs/algorithm.md, "The model")."""

from __future__ import annotations

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from gsa.models.cache import GSACache
from gsa.models.configuration import GSAConfig
from gsa.models.loading import VerifiedLoading
from gsa.models.loss import IGNORE, cross_entropy_rows
from gsa.nn import GatedSlotAttention, GSAState, RMSNorm, ShortConvolution, SlotGateProjection, SwiGLU
from gsa.nn.feature_map import LearnedFeatureMap
from gsa.nn.masks import padding_mask


class GSABlock(nn.Module):
    """x = x + GSA(RMSNorm(x)); x = x + SwiGLU(RMSNorm(x)) (unless intermediate_size = 0: no MLP).
    x: [B, T, d] -> [B, T, d]."""

    def __init__(self, config: GSAConfig):
        super().__init__()
        self.attn_norm = RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.attn = GatedSlotAttention.from_options(config.layer_options())
        self.mlp_norm = self.mlp = None
        if config.intermediate_size:
            self.mlp_norm = RMSNorm(config.hidden_size, eps=config.norm_eps)
            self.mlp = SwiGLU(config.hidden_size, config.intermediate_size, config.hidden_act)

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None,
        cu_seqlens: torch.Tensor | None,
        state: GSAState | None,
        output_state: bool,
        inplace_state: bool = False,
    ) -> tuple[torch.Tensor, GSAState | None]:
        h, new_state = self.attn(self.attn_norm(x), attention_mask, cu_seqlens, state, output_state, inplace_state)
        x = x + h
        if self.mlp is None:
            return x, new_state
        return x + self.mlp(self.mlp_norm(x)), new_state


class GSAPreTrainedModel(VerifiedLoading, PreTrainedModel):
    """Weight init and the transformers hooks shared by GSAModel and GSAForCausalLM; verified saving and loading
    (gsa.models.loading: a checkpoint must fill the model exactly and match the hashes recorded at save time)."""

    config_class = GSAConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["GSABlock"]
    # A recurrent state cannot be rewound, so generate() refuses assisted (speculative) decoding.
    _is_stateful = True

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate() must not hand us a DynamicCache (key/value lists); the model creates its GSACache itself.
        return False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # `transformers.initialization` skips tensors already loaded from a checkpoint.
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, SlotGateProjection):  # gate_bias: the slots' spread of initial memory lengths
                init.copy_(module.bias, module.spread_bias())
            elif getattr(module, "bias", None) is not None:  # q/k/v with qkv_bias: zero, as fla does
                init.zeros_(module.bias)
        elif isinstance(module, ShortConvolution):
            init.uniform_(module.weight, -module.init_bound, module.init_bound)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, RMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, GatedSlotAttention) and module.window_size:
            init.zeros_(module.memory_scale)  # a hybrid layer starts as its window attention alone
        elif isinstance(module, LearnedFeatureMap):  # the identity map, as LearnedFeatureMap.reset_parameters
            init.normal_(module.w1, mean=0.0, std=module.dim**-0.5)
            init.zeros_(module.b1)
            init.zeros_(module.w2)


def check_token_ids(name: str, ids: torch.Tensor, vocab_size: int, ignore: int | None = None) -> None:
    """ids: an integer tensor of token ids in [0, vocab_size) (or `ignore`), else a TypeError / ValueError naming
    `name`. The range is read only from CPU tensors outside torch.compile: on a GPU it would cost a host sync every
    forward (the embedding's own device-side check fails there instead), and in a compiled graph a graph break."""
    if ids.dtype == torch.bool or ids.dtype.is_floating_point or ids.dtype.is_complex:
        raise TypeError(f"{name} must be an integer tensor of token ids, got {ids.dtype}")
    if ids.device.type != "cpu" or ids.numel() == 0 or torch.compiler.is_compiling():
        return
    bad = (ids < 0) | (ids >= vocab_size)
    if ignore is not None:
        bad &= ids != ignore
    if bool(bad.any()):
        allowed = f"[0, vocab_size = {vocab_size})" + (f" or {ignore}" if ignore is not None else "")
        raise ValueError(f"{name} must hold ids in {allowed}, got {ids[bad].unique()[:5].tolist()}")


def check_input_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cu_seqlens: torch.Tensor | None,
                    vocab_size: int) -> None:
    """input_ids [B, T] of token ids (check_token_ids), T >= 1; with cu_seqlens, B == 1 and no attention_mask."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be a [B, T] tensor, got {shape}")
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids must have at least one token (T >= 1)")
    check_token_ids("input_ids", input_ids, vocab_size)
    if cu_seqlens is not None:
        if attention_mask is not None:
            raise ValueError("cu_seqlens packs unpadded sequences: do not pass attention_mask with it")
        if input_ids.shape[0] != 1:
            raise ValueError(f"cu_seqlens needs input_ids of shape [1, total], got {tuple(input_ids.shape)}")


class GSAModel(GSAPreTrainedModel):
    """Token embedding, L GSA blocks and a final RMSNorm. input_ids [B, T] -> last_hidden_state [B, T, d]."""

    # loaded from a GSAForCausalLM checkpoint, the base model leaves its LM head behind
    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]

    def __init__(self, config: GSAConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(GSABlock(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: GSACache | None = None,
        use_cache: bool | None = None,
        cu_seqlens: torch.LongTensor | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPast | tuple:
        """input_ids: [B, T] -> BaseModelOutputWithPast(last_hidden_state [B, T, d], past_key_values).

        attention_mask: [B, T_past + T] or [B, T] (1 = token, 0 = padding; bool or 0 / 1 values); only its last T
            columns are read, since earlier tokens already live in the cache. Padded positions leave the state
            untouched, so left- or right-padded batches give every real token the output it would have alone.
            With short convolutions (use_short_conv) a row's tokens must be contiguous, and to return a cache
            padded on the left (trailing padding would sit inside the convolution window): refused otherwise.
        past_key_values: a GSACache holding the state after the preceding tokens; updated in place.
        use_cache: return a GSACache (a new one when past_key_values is None). Default: True exactly when a
            cache was passed in.
        cu_seqlens: [N + 1] offsets of N sequences packed into input_ids [1, total] (training, or a packed prefill);
            no state crosses a boundary. Cannot be combined with attention_mask or an incoming cache; with
            use_cache=True it returns a new GSACache with one state per sequence (batch N; each layer's token count
            is the packed length), from which N sequences decode.
        return_dict: False returns a plain tuple (generate() passes True); default True.
        """
        check_input_ids(input_ids, attention_mask, cu_seqlens, self.config.vocab_size)
        B, T = input_ids.shape
        if past_key_values is not None and not isinstance(past_key_values, GSACache):
            raise TypeError(f"past_key_values must be a GSACache, got {type(past_key_values).__name__}")
        if use_cache is not None and not isinstance(use_cache, bool):
            raise TypeError(f"use_cache must be a bool or None, got {use_cache!r}")
        L = self.config.num_hidden_layers
        if past_key_values is not None and len(past_key_values.layers) != L:
            raise ValueError(f"past_key_values holds {len(past_key_values.layers)} layers, the model has {L}: make "
                             f"it with GSACache({L}) (or let the model make it: use_cache=True)")
        use_cache = past_key_values is not None if use_cache is None else use_cache
        if past_key_values is not None and not use_cache:
            raise ValueError("past_key_values was given with use_cache=False: the cache would be ignored")
        if cu_seqlens is not None and past_key_values is not None:
            raise ValueError("cu_seqlens packs sequences that each start from a zero state: it cannot continue a "
                             "cache (with use_cache=True and no past_key_values it returns one state per sequence)")
        if use_cache and past_key_values is None:
            past_key_values = GSACache(self.config.num_hidden_layers)
        if attention_mask is not None:
            past = past_key_values.get_seq_length(0) if past_key_values is not None else 0
            shape = tuple(getattr(attention_mask, "shape", ()))
            if len(shape) != 2 or shape[0] != B or shape[1] not in (T, past + T):
                raise ValueError(f"attention_mask must be [B, T] or [B, T_past + T] with B = {B}, T = {T}, "
                                 f"T_past = {past}, got {shape if shape else type(attention_mask).__name__}")
            attention_mask = padding_mask(attention_mask[:, -T:], B, T)  # bool: the layers check no values again

        x = self.embed_tokens(input_ids)
        for i, block in enumerate(self.layers):
            state = past_key_values.state(i) if past_key_values is not None else None
            inplace = state is not None and past_key_values.inplace_decode
            x, new_state = block(x, attention_mask, cu_seqlens, state, output_state=use_cache, inplace_state=inplace)
            if past_key_values is not None:
                past_key_values.update_state(i, new_state, T)
        out = BaseModelOutputWithPast(last_hidden_state=self.norm(x), past_key_values=past_key_values)
        return out if return_dict is not False else out.to_tuple()


class CausalLMEmbeddings:
    """transformers' embedding accessors for a causal LM laid out as `self.model.embed_tokens` (the token
    embedding) and `self.lm_head` (the output projection): GSAForCausalLM and the Zoology harness."""

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value


def shifted_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, cu_seqlens: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean next-token cross-entropy, in at least float32 (without float32 copies of the logits: gsa.models.loss).
    logits: [B, T, vocab], labels: [B, T] (-100 = ignore).

    Position t predicts labels[:, t + 1]; the last position predicts nothing. With cu_seqlens the last token of each
    packed sequence predicts nothing either (the next position belongs to another sequence).
    """
    target = torch.full_like(labels, IGNORE)
    target[:, :-1] = labels[:, 1:]
    if cu_seqlens is not None:
        ends = cu_seqlens[1:-1].to(target.device) - 1  # last position of every sequence but the final one
        target[:, ends] = IGNORE
    return cross_entropy_rows(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


class GSAForCausalLM(CausalLMEmbeddings, GSAPreTrainedModel, GenerationMixin):
    """GSAModel with a language-model head (tied to the embedding when config.tie_word_embeddings).

    input_ids [B, T] -> logits [B, T, vocab] (or the last `logits_to_keep` positions), loss with labels.
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: GSAConfig):
        super().__init__(config)
        self.model = GSAModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def fuse_projections(self) -> None:
        """For decoding: each layer computes q/k/v/slot logits, and the MLP's gate/up, as one matrix product
        whenever autograd is off. Same numbers, no extra memory (the weights become views of the fused matrices);
        undone by moving or casting the model. StaticDecoder calls it."""
        for block in self.model.layers:
            block.attn.fuse_projections()
            if block.mlp is not None:
                block.mlp.fuse_projections()

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: GSACache | None = None,
        use_cache: bool | None = None,
        labels: torch.LongTensor | None = None,
        cu_seqlens: torch.LongTensor | None = None,
        logits_to_keep: int = 0,
        return_dict: bool | None = None,
    ) -> CausalLMOutputWithPast | tuple:
        """input_ids: [B, T] -> CausalLMOutputWithPast(loss, logits, past_key_values).

        labels: [B, T] token ids (-100 = ignore); the loss is the mean shifted cross-entropy (see shifted_lm_loss),
            respecting cu_seqlens boundaries. logits_to_keep: compute logits for the last this many positions only
            (0 = all; generate() passes 1). Other arguments as in GSAModel.forward.
        """
        if isinstance(logits_to_keep, bool) or not isinstance(logits_to_keep, int) or logits_to_keep < 0:
            raise ValueError(f"logits_to_keep must be an int >= 0 (0: every position), got {logits_to_keep!r}")
        if labels is not None and logits_to_keep != 0:
            raise ValueError("labels need logits at every position: pass logits_to_keep=0 with labels")
        if labels is not None:
            if tuple(labels.shape) != tuple(input_ids.shape):
                raise ValueError(f"labels must have input_ids' shape {tuple(input_ids.shape)}, got "
                                 f"{tuple(labels.shape)}")
            check_token_ids("labels", labels, self.config.vocab_size, ignore=IGNORE)
        out = self.model(
            input_ids, attention_mask=attention_mask, past_key_values=past_key_values, use_cache=use_cache,
            cu_seqlens=cu_seqlens, return_dict=True,
        )
        hidden = out.last_hidden_state
        logits = self.lm_head(hidden[:, -logits_to_keep:] if logits_to_keep > 0 else hidden)
        loss = shifted_lm_loss(logits, labels, cu_seqlens) if labels is not None else None
        result = CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=out.past_key_values)
        return result if return_dict is not False else result.to_tuple()
