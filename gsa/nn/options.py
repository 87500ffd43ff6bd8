"""The GSA layer's options, checked once: `LayerOptions` (GatedSlotAttention's arguments as one object) and the
feature-map / convolution rule that GSAConfig checks too."""

from __future__ import annotations

from dataclasses import dataclass

from gsa.nn.feature_map import FEATURE_MAPS
from gsa.nn.gates import FORGET_GATES, SPREAD, check_gate_bias_range
from gsa.ops.validation import SLOT_READS


def check_feature_map_options(feature_map: str, use_short_conv: bool, feature_map_after_conv: bool,
                              conv_bias: bool, owner: str = "") -> None:
    """A ValueError naming the option (prefixed by `owner`, e.g. "GSAConfig.") unless the feature-map and
    convolution options make one layer: identity needs no convolution (its SiLU would be a feature map), and
    without feature_map_after_conv the convolution's SiLU is the feature map, so it must be swish."""
    if feature_map not in FEATURE_MAPS:
        raise ValueError(f"{owner}feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")
    for name, flag in (("use_short_conv", use_short_conv), ("feature_map_after_conv", feature_map_after_conv),
                       ("conv_bias", conv_bias)):
        if not isinstance(flag, bool):
            raise ValueError(f"{owner}{name} must be a bool, got {flag!r}")
    if feature_map in ("identity", "learned") and use_short_conv:
        raise ValueError(f"{owner}feature_map={feature_map!r} needs use_short_conv=False (the convolution has its own "
                         "SiLU)")
    if feature_map == "relu" and use_short_conv and not feature_map_after_conv:
        raise ValueError(f"{owner}feature_map='relu' with use_short_conv needs feature_map_after_conv=True (fla's "
                         "layer: ReLU after the convolution's SiLU); without it the convolution's SiLU is the map")
    for name, flag in (("feature_map_after_conv", feature_map_after_conv), ("conv_bias", conv_bias)):
        if flag and not use_short_conv:
            raise ValueError(f"{owner}{name}=True needs use_short_conv=True")


def _check_bools(**flags) -> None:
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be a bool, got {flag!r}")


@dataclass(frozen=True)
class LayerOptions:
    """GatedSlotAttention's arguments (see its docstring), validated on construction: a ValueError naming the
    argument, expected vs actual. num_kv_heads None means num_heads; gate_bias_range becomes two floats."""

    hidden_size: int
    num_heads: int = 4
    num_kv_heads: int | None = None
    num_slots: int = 64
    expand_k: float = 1.0
    expand_v: float = 1.0
    gate_logit_normalizer: float = 8.0
    norm_eps: float = 1e-5
    use_short_conv: bool = False
    conv_size: int = 4
    conv_bias: bool = False
    scale: float | None = None
    feature_map: str = "swish"
    feature_map_after_conv: bool = False
    use_output_norm: bool = True
    output_norm_affine: bool = True
    qkv_bias: bool = False
    forget_gate: str = "data"
    slot_read: str = "softmax"
    window_size: int = 0
    num_sink_tokens: int = 0
    rope_theta: float = 10000.0
    gate_bias: bool = False
    gate_bias_range: tuple[float, float] = SPREAD

    def __post_init__(self):
        if self.num_kv_heads is None:
            object.__setattr__(self, "num_kv_heads", self.num_heads)
        d, HQ, H, M = self.hidden_size, self.num_heads, self.num_kv_heads, self.num_slots
        if d <= 0 or HQ <= 0 or H <= 0 or M <= 0:
            raise ValueError(f"hidden_size, num_heads, num_kv_heads and num_slots must be positive, got {d}, {HQ}, "
                             f"{H}, {M}")
        if HQ % H != 0:
            raise ValueError(f"num_heads ({HQ}) must be a multiple of num_kv_heads ({H})")
        for name, dim in (("expand_k", d * self.expand_k), ("expand_v", d * self.expand_v)):
            if dim <= 0 or dim != int(dim) or int(dim) % HQ != 0:
                raise ValueError(f"hidden_size * {name} = {dim} must be a positive integer divisible by num_heads "
                                 f"({HQ})")
        if not self.gate_logit_normalizer > 0:
            raise ValueError(f"gate_logit_normalizer must be positive, got {self.gate_logit_normalizer}")
        if self.scale is not None and not self.scale > 0:
            raise ValueError(f"scale must be positive or None (K ** -0.5), got {self.scale}")
        if self.slot_read not in SLOT_READS:
            raise ValueError(f"slot_read must be one of {SLOT_READS}, got {self.slot_read!r}")
        self._check_window()
        if self.forget_gate not in FORGET_GATES:
            raise ValueError(f"forget_gate must be one of {FORGET_GATES}, got {self.forget_gate!r}")
        _check_bools(gate_bias=self.gate_bias)
        if self.gate_bias and self.forget_gate != "data":
            raise ValueError(f"gate_bias=True biases the data-dependent gate's W_f; forget_gate={self.forget_gate!r} "
                             "has none")
        object.__setattr__(self, "gate_bias_range",
                           check_gate_bias_range(self.gate_bias_range, "gate_bias_range", self.gate_bias))
        check_feature_map_options(self.feature_map, self.use_short_conv, self.feature_map_after_conv, self.conv_bias)
        _check_bools(use_output_norm=self.use_output_norm, qkv_bias=self.qkv_bias,
                     output_norm_affine=self.output_norm_affine)
        if not self.output_norm_affine and not self.use_output_norm:
            raise ValueError("output_norm_affine=False needs use_output_norm=True (it removes that norm's gain)")

    def _check_window(self) -> None:
        for name, value in (("window_size", self.window_size), ("num_sink_tokens", self.num_sink_tokens)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if self.num_sink_tokens and not self.window_size:
            raise ValueError(f"num_sink_tokens={self.num_sink_tokens} needs window_size > 0")
        if self.window_size and not self.rope_theta > 0:
            raise ValueError(f"rope_theta must be positive, got {self.rope_theta}")
        if self.window_size and self.head_k_dim % 2:
            raise ValueError(f"window_size > 0 applies RoPE, which needs an even head_k_dim, got {self.head_k_dim}")

    @property
    def head_k_dim(self) -> int:
        return int(self.hidden_size * self.expand_k) // self.num_heads

    @property
    def head_v_dim(self) -> int:
        return int(self.hidden_size * self.expand_v) // self.num_heads
