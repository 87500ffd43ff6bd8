"""GSAConfig: the hyper-parameters of a GSA language model (docs/algorithm.md, "The layer" and "The model")."""

from __future__ import annotations

import dataclasses
import math

from transformers import PretrainedConfig

from gsa.nn.gates import FORGET_GATES, SPREAD, check_gate_bias_range
from gsa.nn.options import check_feature_map_options
from gsa.ops.validation import SLOT_READS
from gsa.nn.mlp import ACTIVATIONS

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


def swiglu_intermediate_size(hidden_size: int, hidden_ratio: float) -> int:
    """The SwiGLU width: the multiple of 256 at or above 2/3 * hidden_ratio * hidden_size (1.3B: 5632)."""
    width = int(hidden_size * hidden_ratio * 2 / 3)
    return 256 * math.ceil(width / 256)


def positive_int(name: str, value, owner: str = "GSAConfig") -> int:
    """`value` if it is a positive int (not a bool), else a ValueError naming `owner.name`."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}.{name} must be a positive int, got {value!r}")
    return value


def _positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"GSAConfig.{name} must be a positive finite number, got {value!r}")
    return float(value)


def _token_id(name: str, value, vocab_size: int, allow_list: bool = False):
    values = value if (allow_list and isinstance(value, (list, tuple))) else [value]
    for v in values:
        if v is None and not isinstance(value, (list, tuple)):
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < vocab_size:
            raise ValueError(f"GSAConfig.{name} must be None or a token id in [0, vocab_size={vocab_size}), got {value!r}")
    return list(value) if isinstance(value, tuple) else value


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
    """Configuration of `GSAModel` / `GSAForCausalLM`. Every field is validated here and read by the model.

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
        self.num_heads = positive_int("num_heads", num_heads)
        self.num_kv_heads = num_heads if num_kv_heads is None else positive_int("num_kv_heads", num_kv_heads)
        if self.num_heads % self.num_kv_heads != 0:
            raise ValueError(f"GSAConfig.num_kv_heads ({num_kv_heads}) must divide num_heads ({num_heads})")
        self.num_slots = positive_int("num_slots", num_slots)
        self.expand_k = _positive_float("expand_k", expand_k)
        self.expand_v = _positive_float("expand_v", expand_v)
        for name, expand in (("expand_k", self.expand_k), ("expand_v", self.expand_v)):
            dim = hidden_size * expand
            if dim != int(dim) or int(dim) % num_heads != 0:
                raise ValueError(
                    f"GSAConfig.{name}: hidden_size * {name} = {dim} must be an integer divisible by num_heads "
                    f"({num_heads})"
                )
        self.gate_logit_normalizer = _positive_float("gate_logit_normalizer", gate_logit_normalizer)
        check_feature_map_options(feature_map, use_short_conv, feature_map_after_conv, conv_bias, "GSAConfig.")
        self.use_short_conv, self.conv_bias = use_short_conv, conv_bias
        self.feature_map, self.feature_map_after_conv = feature_map, feature_map_after_conv
        self.conv_size = positive_int("conv_size", conv_size)
        if conv_size < 2:
            raise ValueError(f"GSAConfig.conv_size must be >= 2, got {conv_size}")
        self.attn_scale = None if attn_scale is None else _positive_float("attn_scale", attn_scale)
        if forget_gate not in FORGET_GATES:
            raise ValueError(f"GSAConfig.forget_gate must be one of {FORGET_GATES}, got {forget_gate!r}")
        self.forget_gate = forget_gate
        if not isinstance(gate_bias, bool):
            raise ValueError(f"GSAConfig.gate_bias must be a bool, got {gate_bias!r}")
        if gate_bias and forget_gate != "data":
            raise ValueError(f"GSAConfig.gate_bias=True needs forget_gate='data' (it biases W_f), got {forget_gate!r}")
        self.gate_bias = gate_bias
        self.gate_bias_range = list(check_gate_bias_range(gate_bias_range, "GSAConfig.gate_bias_range", gate_bias))
        if slot_read not in SLOT_READS:
            raise ValueError(f"GSAConfig.slot_read must be one of {SLOT_READS}, got {slot_read!r}")
        self.slot_read = slot_read
        for name, value in (("window_size", window_size), ("num_sink_tokens", num_sink_tokens)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"GSAConfig.{name} must be an int >= 0, got {value!r}")
        if num_sink_tokens and not window_size:
            raise ValueError(f"GSAConfig.num_sink_tokens={num_sink_tokens} needs window_size > 0")
        if window_size and self.head_k_dim_of(hidden_size, expand_k, num_heads) % 2:
            raise ValueError("GSAConfig.window_size > 0 applies RoPE, which needs an even head_k_dim")
        self.window_size, self.num_sink_tokens = window_size, num_sink_tokens
        self.rope_theta = _positive_float("rope_theta", rope_theta)
        for name, flag in (("use_output_norm", use_output_norm), ("qkv_bias", qkv_bias),
                           ("output_norm_affine", output_norm_affine)):
            if not isinstance(flag, bool):
                raise ValueError(f"GSAConfig.{name} must be a bool, got {flag!r}")
        self.use_output_norm = use_output_norm
        self.qkv_bias = qkv_bias
        self.output_norm_eps = None if output_norm_eps is None else _positive_float("output_norm_eps", output_norm_eps)
        if not use_output_norm and (output_norm_eps is not None or not output_norm_affine):
            raise ValueError("GSAConfig.output_norm_eps / output_norm_affine=False need use_output_norm=True "
                             "(they describe that norm)")
        self.output_norm_affine = output_norm_affine

        if hidden_ratio is not None:
            _positive_float("hidden_ratio", hidden_ratio)
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
        self.norm_eps = _positive_float("norm_eps", norm_eps)
        self.initializer_range = _positive_float("initializer_range", initializer_range)
        if not isinstance(tie_word_embeddings, bool):
            raise ValueError(f"GSAConfig.tie_word_embeddings must be a bool, got {tie_word_embeddings!r}")
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
