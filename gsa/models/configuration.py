"""GSAConfig: the hyper-parameters of a GSA language model (docs/algorithm.md, "The layer" and "The model")."""

from __future__ import annotations

import dataclasses
import math
import numbers

from transformers import PretrainedConfig

from gsa.errors import OptionError
from gsa.nn.gates import SPREAD
from gsa.nn.mlp import ACTIVATIONS
from gsa.nn.options import LayerOptions, check_flag, check_int, check_positive

# Keys transformers itself passes to a config's __init__ (when loading, or from the common PretrainedConfig
# fields); anything else that is not a GSAConfig field is a typo and raises.
HF_CONFIG_KEYS = frozenset(
    {f.name for f in dataclasses.fields(PretrainedConfig)}
    | {
        "model_type", "name_or_path", "_name_or_path", "torch_dtype", "dtype", "architectures",
        "transformers_version", "output_attentions", "attn_implementation", "experts_implementation",
        "_commit_hash",
    }
)

# The fields that are the attention layer's arguments under the same name (attn_scale is its scale; its norm_eps is
# output_norm_eps, or norm_eps when that is None).
LAYER_FIELDS = (
    "num_heads", "num_kv_heads", "num_slots", "expand_k", "expand_v", "gate_logit_normalizer", "use_short_conv",
    "conv_size", "conv_bias", "feature_map", "feature_map_after_conv", "use_output_norm", "output_norm_affine",
    "qkv_bias", "forget_gate", "slot_read", "window_size", "num_sink_tokens", "rope_theta", "gate_bias",
    "gate_bias_range",
)


def swiglu_intermediate_size(hidden_size: int, hidden_ratio: float) -> int:
    """The SwiGLU width: the multiple of 256 at or above 2/3 * hidden_ratio * hidden_size (1.3B: 5632)."""
    width = int(hidden_size * hidden_ratio * 2 / 3)
    return 256 * math.ceil(width / 256)


def positive_int(name: str, value, owner: str = "GSAConfig") -> int:
    """`value` as an int if it is a positive integer (not a bool), else a ValueError naming `owner.name`."""
    try:
        return check_int(name, value)
    except OptionError as e:
        raise e.under(owner) from None


def positive_float(name: str, value, owner: str = "GSAConfig") -> float:
    """`value` as a float if it is a positive finite number (not a bool), else a ValueError naming `owner.name`."""
    try:
        return check_positive(name, value)
    except OptionError as e:
        raise e.under(owner) from None


def flag(name: str, value, owner: str = "GSAConfig") -> bool:
    """`value` as a bool if it is one, else a ValueError naming `owner.name` (a truthy string would otherwise pass)."""
    try:
        return check_flag(name, value)
    except OptionError as e:
        raise e.under(owner) from None


def _token_id(name: str, value, vocab_size: int, allow_list: bool = False):
    """None, a token id (an int), or with allow_list a list of ids; ValueError naming GSAConfig.name otherwise."""
    is_list = allow_list and isinstance(value, (list, tuple))
    values = value if is_list else [value]
    for v in values:
        if v is None and not is_list:
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 0 <= v < vocab_size:
            raise ValueError(f"GSAConfig.{name} must be None or a token id in [0, vocab_size={vocab_size}), got {value!r}")
    if is_list:
        return [int(v) for v in value]
    return None if value is None else int(value)


MODEL_TYPE = "gated_slot_attention"
# What GSAConfig directories saved before were labelled. fla (flash-linear-attention) registers "gsa" for its own
# GSA models, whose configs differ (`looks_like_fla`): "gsa" is read here only for our own keys, and never
# registered while fla's is (gsa.models.registration).
LEGACY_MODEL_TYPE = "gsa"
# Keys an fla GSAConfig writes (any fla version) and ours never has.
FLA_ONLY_KEYS = frozenset({
    "attn", "elementwise_affine", "use_norm", "use_output_gate", "fuse_norm", "fuse_swiglu", "fuse_cross_entropy",
    "fuse_linear_cross_entropy", "clamp_min", "clamp_max", "norm_first", "share_conv_kernel", "gate_low_rank_dim",
})
FLA_HINT = ("this is a flash-linear-attention (fla) GSA config: convert the checkpoint once with "
            "`gsa convert --from FLA_DIR --to DIR`, or load it in memory with gsa.convert.fla.from_fla(FLA_DIR)")


def looks_like_fla(config_dict) -> bool:
    """Whether a config dict (or the keys given to GSAConfig) is an fla GSAConfig's rather than ours."""
    return bool(FLA_ONLY_KEYS & set(config_dict))


class GSAConfig(PretrainedConfig):
    """Configuration of `GSAModel` / `GSAForCausalLM`. Every field is validated here (the attention layer's through
    `layer_options()`, gsa.nn.options) and read by the model.

    Model: vocab_size, hidden_size (d), num_hidden_layers (L); blocks are x += GSA(RMSNorm(x)), x += MLP(RMSNorm(x)).
    Attention (see `gsa.nn.GatedSlotAttention`): num_heads query heads, num_kv_heads key/value heads (None = num_heads;
        fewer gives grouped heads), num_slots (M), expand_k / expand_v (per-head key / value dims are
        d * expand / num_heads), gate_logit_normalizer (tau: log forget gate = logsigmoid(f) / tau), use_short_conv
        and conv_size (causal depthwise convolution on q, k, v, then SiLU), attn_scale (the q . k scale of the slot
        read; None = K ** -0.5, fla's models use 1.0); for layers converted from a Transformer (gsa.convert):
        feature_map ("swish", or "identity": q, k, v as projected; needs use_short_conv=False), use_output_norm
        (False: no swish + RMSNorm before the output projection) and qkv_bias (biases on W_q, W_k, W_v, as in Qwen2);
        for models converted from fla (gsa.convert.fla; all off by default): feature_map "relu" (ReLU on q, k, SiLU
        on v), feature_map_after_conv (the feature map, and SiLU on v, applied again after the convolution's SiLU),
        conv_bias (a bias in each convolution; needs use_short_conv), output_norm_eps (the output RMSNorm's epsilon;
        None = norm_eps; fla's is 1e-5) and output_norm_affine (False: that norm has no learned gain);
        forget_gate for the paper's ablations: "data" (default), "fixed" (data-independent decay), "none" (ABC;
        full sequences only, no decoding cache); slot_read "linear" for the no-softmax ablation (every backend);
        gate_bias (forget_gate "data" only): W_f gets a bias spread over each head's slots, linspace(*gate_bias_range),
        by default (-4, 4): the slots start with memories of ~2 to ~440 tokens (tau 8) instead of ~12 each; (4, 4)
        starts every slot at ~440 (a slow-forgetting start, as ABC's running average).
        Hybrid layers (T2R): window_size > 0 adds exact softmax attention with RoPE (rope_theta) over the
        window_size most recent tokens and the num_sink_tokens first ones, mixed with the slot read per head
        (`GatedSlotAttention`'s memory_scale); 0 (the default) is plain GSA.
    MLP: intermediate_size, or hidden_ratio (the multiple of 256 at or above 2/3 * hidden_ratio * d); at most one
        may be given unless both agree; neither means hidden_ratio = 4. The model reads intermediate_size only;
        hidden_ratio is kept as given so that a model converted from fla exports back with fla's own
        hidden_ratio / intermediate_size pair (gsa.convert.fla_config). intermediate_size = 0: no MLP, each block is
        x = x + GSA(RMSNorm(x)) alone (the sequence-mixer-only models of Zoology's MQAR experiments).
        hidden_act: the gate's nonlinearity ("silu" = SwiGLU, "gelu", "relu").
    norm_eps: epsilon of every RMSNorm (the blocks', the final one and, unless output_norm_eps, the one inside each
        attention layer).
    initializer_range: std of the normal init of linear and embedding weights (biases: zero, but see gate_bias).
    tie_word_embeddings: share the LM head with the token embedding.
    pad_token_id, bos_token_id, eos_token_id: special token ids (eos may be a list), used by generate().
    """

    model_type = MODEL_TYPE

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 2048,
        num_hidden_layers: int = 24,
        num_heads: int = 4,
        num_kv_heads: int | None = None,
        num_slots: int = 64,
        expand_k: float = 1.0,
        expand_v: float = 1.0,
        gate_logit_normalizer: float = 8.0,
        use_short_conv: bool = False,
        conv_size: int = 4,
        conv_bias: bool = False,
        attn_scale: float | None = None,
        feature_map: str = "swish",
        feature_map_after_conv: bool = False,
        use_output_norm: bool = True,
        output_norm_eps: float | None = None,
        output_norm_affine: bool = True,
        qkv_bias: bool = False,
        forget_gate: str = "data",
        slot_read: str = "softmax",
        window_size: int = 0,
        num_sink_tokens: int = 0,
        rope_theta: float = 10000.0,
        gate_bias: bool = False,
        gate_bias_range: tuple[float, float] | list[float] = SPREAD,
        hidden_ratio: float | None = None,
        intermediate_size: int | None = None,
        hidden_act: str = "silu",
        norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = False,
        pad_token_id: int | None = None,
        bos_token_id: int | None = 1,
        eos_token_id: int | list[int] | None = 2,
        **kwargs,
    ):
        unknown = sorted(set(kwargs) - HF_CONFIG_KEYS)
        if unknown:
            hint = f" ({FLA_HINT})" if looks_like_fla(kwargs) else ""
            raise ValueError(f"GSAConfig got unknown option(s) {unknown}{hint}")
        if kwargs.get("model_type", self.model_type) not in (self.model_type, LEGACY_MODEL_TYPE):
            raise ValueError(f"GSAConfig.model_type must be {self.model_type!r}, got {kwargs['model_type']!r}")
        kwargs.pop("model_type", None)

        self.vocab_size = positive_int("vocab_size", vocab_size)
        self.hidden_size = positive_int("hidden_size", hidden_size)
        self.num_hidden_layers = positive_int("num_hidden_layers", num_hidden_layers)
        self.norm_eps = positive_float("norm_eps", norm_eps)
        self.output_norm_eps, self.attn_scale = output_norm_eps, attn_scale
        self.num_heads, self.num_kv_heads, self.num_slots = num_heads, num_kv_heads, num_slots
        self.expand_k, self.expand_v, self.gate_logit_normalizer = expand_k, expand_v, gate_logit_normalizer
        self.use_short_conv, self.conv_size, self.conv_bias = use_short_conv, conv_size, conv_bias
        self.feature_map, self.feature_map_after_conv = feature_map, feature_map_after_conv
        self.use_output_norm, self.output_norm_affine, self.qkv_bias = use_output_norm, output_norm_affine, qkv_bias
        self.forget_gate, self.slot_read, self.gate_bias, self.gate_bias_range = (
            forget_gate, slot_read, gate_bias, gate_bias_range)
        self.window_size, self.num_sink_tokens, self.rope_theta = window_size, num_sink_tokens, rope_theta
        options = self.layer_options()  # checks the layer's fields; they keep the checked values
        for name in LAYER_FIELDS:
            setattr(self, name, getattr(options, name))
        self.attn_scale, self.gate_bias_range = options.scale, list(options.gate_bias_range)
        self.output_norm_eps = None if output_norm_eps is None else options.norm_eps
        if self.output_norm_eps is not None and not use_output_norm:
            raise ValueError("GSAConfig.output_norm_eps needs use_output_norm=True (it describes that norm)")

        if hidden_ratio is not None:  # kept an int when given as one (fla's configs write 4)
            positive_float("hidden_ratio", hidden_ratio)
            hidden_ratio = int(hidden_ratio) if isinstance(hidden_ratio, numbers.Integral) else float(hidden_ratio)
        if isinstance(intermediate_size, numbers.Integral) and not isinstance(intermediate_size, bool):
            intermediate_size = int(intermediate_size)
        if intermediate_size is None:
            intermediate_size = swiglu_intermediate_size(hidden_size, 4.0 if hidden_ratio is None else hidden_ratio)
        elif not (type(intermediate_size) is int and intermediate_size == 0):  # 0 (an int): blocks without an MLP
            positive_int("intermediate_size", intermediate_size)
            if hidden_ratio is not None and swiglu_intermediate_size(hidden_size, hidden_ratio) != intermediate_size:
                raise ValueError(
                    f"GSAConfig: give intermediate_size or hidden_ratio, not both: hidden_ratio={hidden_ratio} means "
                    f"intermediate_size={swiglu_intermediate_size(hidden_size, hidden_ratio)}, got {intermediate_size}"
                )
        self.hidden_ratio = hidden_ratio
        self.intermediate_size = intermediate_size
        if hidden_act not in ACTIVATIONS:
            raise ValueError(f"GSAConfig.hidden_act must be one of {sorted(ACTIVATIONS)}, got {hidden_act!r}")
        self.hidden_act = hidden_act
        self.initializer_range = positive_float("initializer_range", initializer_range)
        tie_word_embeddings = flag("tie_word_embeddings", tie_word_embeddings)
        pad_token_id = _token_id("pad_token_id", pad_token_id, vocab_size)
        bos_token_id = _token_id("bos_token_id", bos_token_id, vocab_size)
        eos_token_id = _token_id("eos_token_id", eos_token_id, vocab_size, allow_list=True)
        super().__init__(
            tie_word_embeddings=tie_word_embeddings,
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            **kwargs,
        )

    def layer_options(self) -> LayerOptions:
        """The attention layer's arguments as one object (GatedSlotAttention.from_options), checked there; a bad
        value raises a ValueError naming the GSAConfig field."""
        norm_eps = self.norm_eps if self.output_norm_eps is None else self.output_norm_eps
        try:
            return LayerOptions(self.hidden_size, scale=self.attn_scale, norm_eps=norm_eps,
                                **{name: getattr(self, name) for name in LAYER_FIELDS})
        except OptionError as e:
            raise e.under("GSAConfig", {"scale": "attn_scale", "norm_eps": "output_norm_eps"}) from None

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        """transformers' reader of config.json, plus: a directory of ours saved with the earlier model_type "gsa"
        is read as ours (relabelled), and an fla GSA checkpoint is refused with how to convert it."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if config_dict.get("model_type") == LEGACY_MODEL_TYPE:
            if looks_like_fla(config_dict):
                raise ValueError(f"{pretrained_model_name_or_path}: {FLA_HINT}")
            config_dict = {**config_dict, "model_type": cls.model_type}
        return config_dict, kwargs

    @staticmethod
    def head_k_dim_of(hidden_size: int, expand_k: float, num_heads: int) -> int:
        return int(hidden_size * expand_k) // num_heads

    @property
    def head_k_dim(self) -> int:
        return self.head_k_dim_of(self.hidden_size, self.expand_k, self.num_heads)

    @property
    def head_v_dim(self) -> int:
        return int(self.hidden_size * self.expand_v) // self.num_heads
