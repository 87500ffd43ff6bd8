"""Zoology's MQAR language model around our sequence mixers: the harness the GSA paper's recall figure comes from.

The GSA paper's MQAR numbers (GSA ~98% at d = 128, 64 pairs) were measured in HazyResearch/zoology, whose models
differ from ours in ways that matter for a synthetic recall task. Facts from its source (zoology/model.py,
zoology/mixers/{hybrid,base_conv,convolution}.py, zoology/experiments/mqar_example_configs/original_mqar_configs.py):

- token embedding without positions -> L blocks -> LayerNorm -> LM head tied to the embedding;
- block i: ``residual += hidden; hidden = mixer_i(LN1(residual)); residual += hidden; hidden = LN2(residual)``:
  the "state mixer" after LN2 is the identity (no MLP), and its output is added to the residual by the next block;
- ``Hybrid`` mixers alternate by layer (``configs[i % 2]``): BaseConv at even layers, the model's mixer at odd ones,
  so Zoology's 4 layers are conv, mixer, conv, mixer;
- BaseConv(u) = conv(u) * (W u + b) + u, conv a depthwise causal ``nn.Conv1d`` of width 3 with bias: a gated
  convolution whose product binds each token to its predecessors (the key before a value);
- ``nn.Linear`` weights ~ N(0, 0.02) with zero bias, embeddings ~ N(0, 0.02), and any ``out_proj.weight`` ~
  N(0, 0.02 / sqrt(2 L)); convolutions keep PyTorch's own init.

``ZoologyForCausalLM`` rebuilds that model with the mixer chosen by ``mixer``: ``"gsa"`` (our GatedSlotAttention
layer), ``"abc"`` (the same layer with forget_gate="none") or ``"attention"`` (causal softmax multi-head attention
without positions, Zoology's MHA). It is a benchmark harness for full, unpadded sequences (MQAR training and
evaluation through ``gsa train`` with ``[model] type = "zoology"``): no cache, padding or packing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput

from gsa.errors import OptionError
from gsa.models.configuration import HF_CONFIG_KEYS, flag, positive_float, positive_int
from gsa.models.loading import VerifiedLoading
from gsa.models.modeling import CausalLMEmbeddings, check_input_ids, shifted_lm_loss
from gsa.nn import GatedSlotAttention, ShortConvolution, SlotGateProjection
from gsa.nn.gates import SPREAD
from gsa.nn.options import LayerOptions

MIXERS = ("gsa", "abc", "attention")


class ZoologyConfig(PretrainedConfig):
    """The harness's hyper-parameters. num_hidden_layers counts BaseConv and mixer layers together (Zoology's
    n_layers: 4 = conv, mixer, conv, mixer). num_heads: the mixer's heads (Zoology's GSA and attention configs use
    2). num_slots, gate_logit_normalizer, use_short_conv, attn_scale, gate_bias and gate_bias_range go to the GSA layer
    (attn_scale None: K ** -0.5; fla's layer uses 1.0; gate_bias as in GSAConfig: W_f's bias spread over the slots)."""

    model_type = "zoology"

    def __init__(self, vocab_size: int = 8192, hidden_size: int = 128, num_hidden_layers: int = 4, mixer: str = "gsa",
                 num_heads: int = 2, num_slots: int = 64, gate_logit_normalizer: float = 8.0,
                 use_short_conv: bool = False, attn_scale: float | None = None, gate_bias: bool = False,
                 gate_bias_range: tuple[float, float] | list[float] = SPREAD, conv_kernel: int = 3,
                 layer_norm_eps: float = 1e-5, initializer_range: float = 0.02, tie_word_embeddings: bool = True,
                 **kwargs):
        unknown = sorted(set(kwargs) - HF_CONFIG_KEYS - {"model_type"})
        if unknown:  # a misspelt option would otherwise be kept as an attribute and change nothing
            raise ValueError(f"ZoologyConfig got unknown option(s) {unknown}")
        kwargs.pop("model_type", None)
        if mixer not in MIXERS:
            raise ValueError(f"ZoologyConfig.mixer must be one of {MIXERS}, got {mixer!r}")
        vocab_size, hidden_size, num_heads, num_hidden_layers, num_slots, conv_kernel = (
            positive_int(name, value, "ZoologyConfig") for name, value in (
                ("vocab_size", vocab_size), ("hidden_size", hidden_size), ("num_heads", num_heads),
                ("num_hidden_layers", num_hidden_layers), ("num_slots", num_slots), ("conv_kernel", conv_kernel)))
        if num_hidden_layers % 2:
            raise ValueError(f"ZoologyConfig.num_hidden_layers counts conv and mixer layers in pairs: it must be even, "
                             f"got {num_hidden_layers}")
        if hidden_size % num_heads:
            raise ValueError(f"ZoologyConfig.hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        self.vocab_size, self.hidden_size, self.num_hidden_layers = vocab_size, hidden_size, num_hidden_layers
        self.mixer, self.num_heads, self.num_slots = mixer, num_heads, num_slots
        self.gate_logit_normalizer, self.use_short_conv, self.attn_scale = gate_logit_normalizer, use_short_conv, attn_scale
        if gate_bias and mixer != "gsa":
            raise ValueError(f"ZoologyConfig.gate_bias biases GSA's gate: needs mixer='gsa', got {mixer!r}")
        self.gate_bias, self.gate_bias_range = gate_bias, gate_bias_range
        options = self.layer_options()  # checks the GSA layer's fields; they keep the checked values
        self.gate_logit_normalizer, self.use_short_conv, self.attn_scale = (
            options.gate_logit_normalizer, options.use_short_conv, options.scale)
        self.gate_bias, self.gate_bias_range = options.gate_bias, list(options.gate_bias_range)
        self.conv_kernel = conv_kernel
        self.layer_norm_eps = positive_float("layer_norm_eps", layer_norm_eps, "ZoologyConfig")
        self.initializer_range = positive_float("initializer_range", initializer_range, "ZoologyConfig")
        super().__init__(tie_word_embeddings=flag("tie_word_embeddings", tie_word_embeddings, "ZoologyConfig"),
                         **kwargs)

    def layer_options(self) -> LayerOptions:
        """The GSA mixer's arguments as one object (GatedSlotAttention.from_options); a bad value raises a ValueError
        naming the ZoologyConfig field."""
        try:
            return LayerOptions(
                self.hidden_size, num_heads=self.num_heads, num_slots=self.num_slots,
                gate_logit_normalizer=self.gate_logit_normalizer, use_short_conv=self.use_short_conv,
                scale=self.attn_scale, forget_gate="none" if self.mixer == "abc" else "data", gate_bias=self.gate_bias,
                gate_bias_range=self.gate_bias_range)
        except OptionError as e:
            raise e.under("ZoologyConfig", {"scale": "attn_scale"}) from None


class BaseConv(nn.Module):
    """Zoology's gated convolution: u [B, T, d] -> conv(u) * (W u + b) + u, conv depthwise and causal (width k, bias)."""

    def __init__(self, d: int, kernel: int):
        super().__init__()
        self.projection = nn.Linear(d, d)
        self.conv = nn.Conv1d(d, d, kernel, groups=d, padding=kernel - 1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        conv = self.conv(u.transpose(1, 2))[..., : u.shape[1]]  # [B, d, T]; the left padding makes it causal
        # back to [B, T, d] in memory too: a transposed view would make the output (and so the whole residual stream
        # after it) time-major, and a compiled block recompile for that layout
        return conv.transpose(1, 2).contiguous() * self.projection(u) + u


class CausalAttention(nn.Module):
    """Zoology's MHA: causal softmax attention over all previous tokens, no positional information.
    x [B, T, d] -> [B, T, d]; heads of d / num_heads, scale head_dim ** -0.5, biased projections."""

    def __init__(self, d: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.Wqkv = nn.Linear(d, 3 * d)
        self.out_proj = nn.Linear(d, d)
        self.out_proj.depth_scaled_init = True  # Zoology rescales every out_proj for the depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        q, k, v = self.Wqkv(x).view(B, T, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, heads, T, head_dim]
        return self.out_proj(o.transpose(1, 2).reshape(B, T, d))


class ZoologyBlock(nn.Module):
    """One Zoology TransformerBlock with an identity state mixer, on the residual stream: x [B, T, d] -> [B, T, d].

    Zoology's block maps (hidden, residual) to (norm2(r), r) with r = mixer(norm1(hidden + residual)) + hidden +
    residual, and the next block (or the final norm) adds the two again. Here the block does that addition itself and
    returns norm2(r) + r: the same sums in the same order, and one signature for every block (a first block with
    residual None would be a second graph for torch.compile to build for each shape and grad mode)."""

    def __init__(self, config: ZoologyConfig, layer_idx: int):
        super().__init__()
        d = config.hidden_size
        self.norm1 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.norm2 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        if layer_idx % 2 == 0:
            self.mixer = BaseConv(d, config.conv_kernel)
        elif config.mixer == "attention":
            self.mixer = CausalAttention(d, config.num_heads)
        else:
            self.mixer = GatedSlotAttention.from_options(config.layer_options())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mixer(self.norm1(x))
        if isinstance(h, tuple):  # GatedSlotAttention returns (y, state)
            h = h[0]
        r = h + x
        return self.norm2(r) + r


class ZoologyPreTrainedModel(VerifiedLoading, PreTrainedModel):
    config_class = ZoologyConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Zoology's init (zoology/model.py `_init_weights`); our GSA layer's short convolutions keep their own."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            if getattr(module, "depth_scaled_init", False):
                std = std / math.sqrt(2 * self.config.num_hidden_layers)
            init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, SlotGateProjection):  # gate_bias: the slots' spread of initial memory lengths
                init.copy_(module.bias, module.spread_bias())
            elif getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, ShortConvolution):
            init.uniform_(module.weight, -module.init_bound, module.init_bound)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Conv1d):  # PyTorch's default, which Zoology keeps: U(+-1/sqrt(fan_in)) for both
            bound = 1.0 / math.sqrt(module.weight[0].numel())  # (through `init`, which skips loaded tensors)
            init.uniform_(module.weight, -bound, bound)
            init.uniform_(module.bias, -bound, bound)


def _check_inputs(input_ids: torch.Tensor, kwargs: dict, vocab_size: int) -> None:
    check_input_ids(input_ids, None, None, vocab_size)
    given = sorted(k for k, v in kwargs.items() if v is not None)
    if given:
        raise ValueError(f"the Zoology harness runs full unpadded sequences only (MQAR); it takes no {given}")


class ZoologyModel(ZoologyPreTrainedModel):
    """Embedding (no positions), the alternating blocks and the final LayerNorm: input_ids [B, T] ->
    last_hidden_state [B, T, d]."""

    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]  # loaded from a ZoologyForCausalLM checkpoint

    def __init__(self, config: ZoologyConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(ZoologyBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(self, input_ids: torch.LongTensor, **kwargs) -> BaseModelOutput:
        _check_inputs(input_ids, kwargs, self.config.vocab_size)
        x = self.embed_tokens(input_ids)
        for block in self.layers:
            x = block(x)
        return BaseModelOutput(last_hidden_state=self.norm(x))


class ZoologyForCausalLM(CausalLMEmbeddings, ZoologyPreTrainedModel):
    """ZoologyModel with its LM head (tied to the embedding unless tie_word_embeddings=False).
    input_ids [B, T] -> logits [B, T, vocab]; with labels [B, T] (-100 = ignore) also the shifted cross-entropy."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: ZoologyConfig):
        super().__init__(config)
        self.model = ZoologyModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids: torch.LongTensor, labels: torch.LongTensor | None = None, **kwargs) -> CausalLMOutput:
        if labels is not None and tuple(labels.shape) != tuple(input_ids.shape):
            raise ValueError(f"labels must have input_ids' shape {tuple(input_ids.shape)}, got {tuple(labels.shape)}")
        kwargs.pop("return_dict", None)
        logits = self.lm_head(self.model(input_ids, **kwargs).last_hidden_state)
        loss = shifted_lm_loss(logits, labels, None) if labels is not None else None
        return CausalLMOutput(loss=loss, logits=logits)
