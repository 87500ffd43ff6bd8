"""Which Transformers convert to GSA, and the student's GSAConfig: `check_supported` names every field of a teacher
config that conversion cannot carry over, `gsa_config_from` maps a supported config to its student's
(docs/convert.md's table; gsa/convert/transformer.py's docstring says why each option is set as it is).

Refused, with an error naming the field: other architectures (MoE, non-Llama blocks), MLP activations other
than SiLU, Llama's attention_bias (an o_proj bias GSA does not have) and mlp_bias, RoPE scaling variants
(rope_type other than "default"), sliding-window attention (Mistral `sliding_window`, Qwen2
`use_sliding_window` / `layer_types`), head layouts GSA cannot express.
"""

from __future__ import annotations

import re

from gsa.models import GSAConfig

SUPPORTED = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


class UnsupportedModelError(ValueError):
    """The teacher has something conversion cannot carry over; the message names it."""


def rename(name: str, rules: list[tuple[str, str]], missing: str) -> str:
    """`name` through the first (pattern, replacement) rule whose pattern matches it (regex substitution); none:
    UnsupportedModelError(missing.format(name=name))."""
    for pattern, target in rules:
        if re.match(pattern, name):
            return re.sub(pattern, target, name)
    raise UnsupportedModelError(missing.format(name=name))


def check_supported(config) -> None:
    """Raise UnsupportedModelError naming every field of a teacher config that conversion cannot handle."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED:
        archs = getattr(config, "architectures", None)
        raise UnsupportedModelError(
            f"gsa convert supports model_type {sorted(SUPPORTED)} ({', '.join(SUPPORTED.values())}); got "
            f"model_type={model_type!r} (architectures={archs})"
        )
    problems = []
    if config.hidden_act not in ("silu", "swish"):
        problems.append(f"hidden_act={config.hidden_act!r} (the GSA MLP is SwiGLU: only 'silu' is carried over)")
    if getattr(config, "attention_bias", False):
        problems.append("attention_bias=True (an o_proj bias: GSA carries q/k/v biases only)")
    if getattr(config, "mlp_bias", False):
        problems.append("mlp_bias=True (the GSA MLP has no biases)")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    # A flat dict, or one dict per layer type; anything else is reported as it is.
    ropes = list(rope.values()) if rope and all(isinstance(v, dict) for v in rope.values()) else [rope]
    rope_types = {r.get("rope_type", r.get("type", "default")) if isinstance(r, dict) else repr(r) for r in ropes}
    if rope_types != {"default"}:
        problems.append(f"rope_type={sorted(rope_types)} (RoPE scaling: only the default RoPE, which conversion drops)")
    if getattr(config, "sliding_window", None) is not None and (
        model_type == "mistral" or getattr(config, "use_sliding_window", False)
    ):
        problems.append(
            f"sliding_window={config.sliding_window} (sliding-window attention; set it to null in config.json to "
            "convert anyway: the GSA student has no window, its memory is its slots)"
        )
    layer_types = getattr(config, "layer_types", None) or []
    if any(t != "full_attention" for t in layer_types):
        problems.append(f"layer_types={sorted(set(layer_types))} (only 'full_attention' layers)")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if config.num_attention_heads % (config.num_key_value_heads or config.num_attention_heads):
        problems.append("num_attention_heads must be a multiple of num_key_value_heads")
    if config.hidden_size * (config.num_attention_heads * head_dim / config.hidden_size) != (
        config.num_attention_heads * head_dim
    ):
        problems.append(
            f"head_dim={head_dim} with {config.num_attention_heads} heads and hidden_size={config.hidden_size} "
            "(not expressible as GSAConfig.expand_k)"
        )
    if problems:
        raise UnsupportedModelError(f"cannot convert this {model_type} checkpoint: " + "; ".join(problems))


def rope_theta_of(config) -> float:
    """The teacher's RoPE base (transformers 5 keeps it in rope_parameters, earlier versions in rope_theta)."""
    rope = getattr(config, "rope_parameters", None) or {}
    if isinstance(rope, dict) and "rope_theta" in rope:
        return float(rope["rope_theta"])
    return float(getattr(config, "rope_theta", 10000.0))


def gsa_config_from(config, *, num_slots: int, gate_logit_normalizer: float, feature_map: str, use_output_norm: bool,
                    window_size: int, num_sink_tokens: int, gate_bias: bool) -> GSAConfig:
    """The GSAConfig of the student of a (supported) Llama/Mistral/Qwen2 config; see docs/convert.md's table. The
    student's options are from_pretrained_transformer's (its defaults are theirs)."""
    check_supported(config)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    expand = heads * head_dim / config.hidden_size
    return GSAConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_heads=heads,
        num_kv_heads=config.num_key_value_heads or heads,
        num_slots=num_slots,
        expand_k=expand,
        expand_v=expand,
        gate_logit_normalizer=gate_logit_normalizer,
        use_short_conv=False,
        attn_scale=None,  # K ** -0.5 = head_dim ** -0.5, the teacher's
        feature_map=feature_map,
        use_output_norm=use_output_norm,
        qkv_bias=config.model_type == "qwen2",
        window_size=window_size,
        num_sink_tokens=num_sink_tokens,
        gate_bias=gate_bias,
        rope_theta=rope_theta_of(config),
        intermediate_size=config.intermediate_size,
        hidden_act="silu",
        norm_eps=config.rms_norm_eps,
        initializer_range=config.initializer_range,
        tie_word_embeddings=bool(config.tie_word_embeddings),
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
    )
