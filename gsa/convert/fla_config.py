"""fla's GSAConfig (flash-linear-attention 0.6.0, `fla.models.gsa`) <-> GSAConfig, field by field.

Read from fla 0.6.0's layer and model code (fla/layers/gsa.py, fla/models/gsa/): what each fla field does to the
function, hence what it maps to here. fla need not be installed: both directions work on plain config dicts.

- Same meaning, same name: vocab_size, hidden_size, num_hidden_layers, num_heads, num_kv_heads (None = num_heads),
  num_slots (None = the head's key dim), expand_k / expand_v (fla's __init__ spells them `exapnd_k` / `exapnd_v`
  and writes `expand_k` / `expand_v`; both are read), gate_logit_normalizer, use_short_conv, conv_size,
  feature_map ("swish" or "relu"), norm_eps (the blocks' and final RMSNorms), hidden_ratio, intermediate_size,
  initializer_range, tie_word_embeddings, pad/bos/eos_token_id.
- hidden_act "swish" -> "silu" (fla's GatedMLP is SwiGLU; its other activation, "powlu", is refused).
- elementwise_affine -> output_norm_affine (fla's RMSNorm has a gain only when it is truthy).
- Fixed by fla's layer, so set here: attn_scale = 1.0 (its `scale`), feature_map_after_conv = use_short_conv (its
  feature map, and SiLU on v, run again after the convolution's SiLU), output_norm_eps = 1e-5 (the output norm
  runs through `rms_norm_linear`, whose eps is its default, whatever norm_eps says), conv_bias = False (fla's model
  builds its convolutions without one).
- No effect on the function (kernels, loss, cache; clamp_* is read by fla's ABC layer, not GSA's): fuse_norm,
  fuse_swiglu, fuse_cross_entropy, fuse_linear_cross_entropy, use_l2warp, use_cache, max_position_embeddings,
  clamp_min, clamp_max. Dropped on the way in; fla's defaults on the way out.
- Refused, by name (UnsupportedModelError): attn with layers (fla's interleaved softmax-attention layers),
  attnres_block_size (attention residuals), feature_map "t2r" (a learned map) or any other, use_norm=False and
  use_output_gate=True (fla 0.6.0 ignores both, earlier fla versions did not: what such a checkpoint computes is
  not settled), gate_logit_normalizer None, expand_v != 1 with elementwise_affine (fla's gain has hidden_size
  entries: fla cannot run it), and any key fla 0.6.0 does not know (norm_first, share_conv_kernel,
  gate_low_rank_dim: layouts of older fla versions).
"""

from __future__ import annotations

from gsa.convert.transformer import UnsupportedModelError
from gsa.models import GSAConfig
from gsa.models.configuration import HF_CONFIG_KEYS, LEGACY_MODEL_TYPE, swiglu_intermediate_size

FLA_MODEL_TYPE = LEGACY_MODEL_TYPE  # fla registers its GSA models as "gsa"
FLA_OUTPUT_NORM_EPS = 1e-5  # fla.modules.layernorm.rms_norm_linear's default eps
FLA_SCALE = 1.0  # fla.layers.gsa.GatedSlotAttention's default scale, which its model keeps

# fla fields with no effect on the function of the model built here -> fla 0.6.0's default (written on export).
FUNCTION_FREE = {
    "fuse_norm": True, "fuse_swiglu": True, "fuse_cross_entropy": True, "fuse_linear_cross_entropy": False,
    "use_l2warp": False, "use_cache": True, "max_position_embeddings": 2048, "clamp_min": None, "clamp_max": None,
}
# fla fields reproduced at one value only -> that value (fla 0.6.0's default).
FIXED = {"attnres_block_size": None, "use_output_gate": False, "use_norm": True}
# fla fields that map to ours (see the module docstring).
MAPPED = {
    "vocab_size", "hidden_size", "num_hidden_layers", "num_heads", "num_kv_heads", "num_slots", "expand_k",
    "expand_v", "exapnd_k", "exapnd_v", "gate_logit_normalizer", "use_short_conv", "conv_size", "feature_map",
    "elementwise_affine", "norm_eps", "hidden_ratio", "intermediate_size", "hidden_act", "initializer_range",
    "tie_word_embeddings", "pad_token_id", "bos_token_id", "eos_token_id", "attn",
}
FEATURE_MAPS = ("swish", "relu")


def _attention_layers(attn) -> list[int]:
    """The layer indices fla's `attn` gives softmax attention (a dict or a list of dicts, each with 'layers')."""
    specs = [] if attn is None else [attn] if isinstance(attn, dict) else list(attn)
    return sorted({i for spec in specs for i in (spec.get("layers") or [])})


def gsa_config_from_fla(fla: dict) -> GSAConfig:
    """An fla GSA config dict (config.json, or an fla GSAConfig's to_dict()) -> the GSAConfig of the same function.
    Raises UnsupportedModelError naming every field that cannot be reproduced."""
    if fla.get("model_type", FLA_MODEL_TYPE) != FLA_MODEL_TYPE:
        raise UnsupportedModelError(f"not an fla GSA config: model_type={fla.get('model_type')!r}")
    problems = [f"{key} (unknown to fla 0.6.0's GSAConfig: an older fla layout?)"
                for key in sorted(set(fla) - MAPPED - set(FUNCTION_FREE) - set(FIXED) - HF_CONFIG_KEYS)]
    problems += [f"{key}={fla[key]!r} (reproduced only at {value!r})"
                 for key, value in FIXED.items() if fla.get(key, value) != value]
    if _attention_layers(fla.get("attn")):
        problems.append(f"attn: softmax attention at layers {_attention_layers(fla['attn'])} (fla's interleaved "
                        "attention layers are not built here)")
    feature_map = fla.get("feature_map", "swish")
    if feature_map not in FEATURE_MAPS:
        problems.append(f"feature_map={feature_map!r} (only {FEATURE_MAPS}; 't2r' is a learned map not built here)")
    if fla.get("hidden_act", "swish") != "swish":
        problems.append(f"hidden_act={fla['hidden_act']!r} (only 'swish', fla's SwiGLU)")
    if fla.get("gate_logit_normalizer", 8) is None:
        problems.append("gate_logit_normalizer=None (fla's layer divides by it)")
    hidden = fla.get("hidden_size", 2048)
    expand_k = fla.get("expand_k", fla.get("exapnd_k", 1))
    expand_v = fla.get("expand_v", fla.get("exapnd_v", 1))
    affine = bool(fla.get("elementwise_affine", True))
    if affine and hidden * expand_v != hidden:
        problems.append(f"expand_v={expand_v} with elementwise_affine (fla's output-norm gain has hidden_size "
                        "entries, so fla itself cannot run this model)")
    if problems:
        raise UnsupportedModelError("cannot convert this fla GSA checkpoint: " + "; ".join(problems))

    heads = fla.get("num_heads", 4)
    hidden_ratio, intermediate = fla.get("hidden_ratio", 4), fla.get("intermediate_size")
    if intermediate is not None and hidden_ratio is not None and (
            swiglu_intermediate_size(hidden, hidden_ratio) != intermediate):
        hidden_ratio = None  # fla ignores hidden_ratio when intermediate_size is given
    num_slots = fla.get("num_slots", 64)
    use_short_conv = fla.get("use_short_conv", False)
    return GSAConfig(
        vocab_size=fla.get("vocab_size", 32000), hidden_size=hidden, num_hidden_layers=fla.get("num_hidden_layers", 24),
        num_heads=heads, num_kv_heads=fla.get("num_kv_heads"),
        num_slots=GSAConfig.head_k_dim_of(hidden, expand_k, heads) if num_slots is None else num_slots,
        expand_k=expand_k, expand_v=expand_v, gate_logit_normalizer=fla.get("gate_logit_normalizer", 8),
        use_short_conv=use_short_conv, conv_size=fla.get("conv_size", 4), conv_bias=False, attn_scale=FLA_SCALE,
        feature_map=feature_map, feature_map_after_conv=use_short_conv, output_norm_eps=FLA_OUTPUT_NORM_EPS,
        output_norm_affine=affine, hidden_ratio=hidden_ratio, intermediate_size=intermediate, hidden_act="silu",
        norm_eps=fla.get("norm_eps", 1e-6), initializer_range=fla.get("initializer_range", 0.02),
        tie_word_embeddings=fla.get("tie_word_embeddings", False), pad_token_id=fla.get("pad_token_id"),
        bos_token_id=fla.get("bos_token_id", 1), eos_token_id=fla.get("eos_token_id", 2),
    )


def fla_config_from(config: GSAConfig) -> dict:
    """A GSAConfig -> the config dict of the fla GSA model of the same function (fla's field names; what fla's
    save_pretrained writes, less transformers' bookkeeping). Raises UnsupportedModelError naming every option
    fla's model cannot express."""
    c = config
    need = {  # our field: (the value fla's model has, why)
        "forget_gate": ("data", "fla's layer has the data-dependent gate only"),
        "slot_read": ("softmax", "fla's layer reads slots through a softmax"),
        "gate_bias": (False, "fla's f_proj has no bias"), "qkv_bias": (False, "fla's q/k/v projections have no bias"),
        "window_size": (0, "fla's GSA layer has no sliding window"), "conv_bias": (False, "fla's model builds "
                                                                                 "convolutions without bias"),
        "use_output_norm": (True, "fla always normalises the output"), "attn_scale": (FLA_SCALE, "fla's scale"),
        "hidden_act": ("silu", "fla's MLP is SwiGLU"), "feature_map_after_conv": (
            c.use_short_conv, "fla applies the feature map after the convolution's SiLU, and only then"),
        "output_norm_eps": (FLA_OUTPUT_NORM_EPS, "fla's output norm runs with eps 1e-5"),
    }
    problems = [f"{name}={getattr(c, name)!r} ({why}; needs {value!r})"
                for name, (value, why) in need.items() if getattr(c, name) != value]
    if c.feature_map not in FEATURE_MAPS:
        problems.append(f"feature_map={c.feature_map!r} (fla's maps: {FEATURE_MAPS})")
    if c.intermediate_size == 0:
        problems.append("intermediate_size=0 (fla's blocks always have an MLP)")
    if c.output_norm_affine and c.head_v_dim * c.num_heads != c.hidden_size:
        problems.append(f"expand_v={c.expand_v} with output_norm_affine (fla's gain has hidden_size entries)")
    if problems:
        raise UnsupportedModelError("cannot export to fla's GSA format: " + "; ".join(problems))
    ratio = 4 if c.hidden_ratio is None else c.hidden_ratio
    return {
        "model_type": FLA_MODEL_TYPE, "architectures": ["GSAForCausalLM"],
        "vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
        "num_heads": c.num_heads, "num_kv_heads": None if c.num_kv_heads == c.num_heads else c.num_kv_heads,
        "num_slots": c.num_slots, "expand_k": c.expand_k, "expand_v": c.expand_v,
        "gate_logit_normalizer": c.gate_logit_normalizer, "use_short_conv": c.use_short_conv,
        "conv_size": c.conv_size, "feature_map": c.feature_map, "elementwise_affine": c.output_norm_affine,
        "norm_eps": c.norm_eps, "hidden_ratio": ratio,
        "intermediate_size": None if swiglu_intermediate_size(c.hidden_size, ratio) == c.intermediate_size
        else c.intermediate_size,
        "hidden_act": "swish", "initializer_range": c.initializer_range,
        "tie_word_embeddings": c.tie_word_embeddings, "pad_token_id": c.pad_token_id,
        "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id, "attn": None, **FIXED, **FUNCTION_FREE,
    }
