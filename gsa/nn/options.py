"""The GSA layer's options as one object, checked once: `LayerOptions` holds GatedSlotAttention's arguments, and
GSAConfig and ZoologyConfig build theirs with `layer_options()`, so a bad value raises the same OptionError
whichever way the layer is made (re-worded with the config's field name there)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from gsa.errors import OptionError
from gsa.nn.feature_map import FEATURE_MAPS
from gsa.nn.gates import FORGET_GATES, SPREAD, check_gate_bias_range
from gsa.ops.validation import SLOT_READS

# Numbers and flags are taken as the ABCs define them, so numpy's scalars (np.int64, np.float32, np.bool_) count as
# the values they hold; each check returns the plain Python value, which config.json can hold.


def check_int(name: str, value, minimum: int = 1) -> int:
    """`value` as an int if it is an integer (not a bool) >= minimum, else an OptionError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise OptionError(name, f" must be {kind}, got {value!r}")
    return int(value)


def check_positive(name: str, value) -> float:
    """`value` as a float if it is a positive finite real number (not a bool), else an OptionError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise OptionError(name, f" must be a positive finite number, got {value!r}")
    return float(value)


def check_flag(name: str, value) -> bool:
    """`value` as a bool if it is one (Python's or numpy's), else an OptionError naming `name`."""
    if not isinstance(value, (bool, np.bool_)):
        raise OptionError(name, f" must be a bool, got {value!r}")
    return bool(value)


def _choice(name: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise OptionError(name, f" must be one of {choices}, got {value!r}")
    return value


@dataclass(frozen=True)
class LayerOptions:
    """GatedSlotAttention's arguments (see its docstring), validated on construction: an OptionError (a ValueError)
    naming the argument, expected vs actual. num_kv_heads None means num_heads; counts become ints, flags bools,
    other numbers floats and gate_bias_range two floats (numpy scalars included)."""

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
        def normalise(name, value):
            object.__setattr__(self, name, value)

        for name in ("hidden_size", "num_heads", "num_slots"):
            normalise(name, check_int(name, getattr(self, name)))
        normalise("num_kv_heads", self.num_heads if self.num_kv_heads is None else check_int("num_kv_heads",
                                                                                             self.num_kv_heads))
        if self.num_heads % self.num_kv_heads:
            raise OptionError("num_kv_heads", f" ({self.num_kv_heads}) must divide num_heads ({self.num_heads})")
        for name in ("expand_k", "expand_v", "gate_logit_normalizer", "norm_eps", "rope_theta"):
            normalise(name, check_positive(name, getattr(self, name)))
        for name in ("expand_k", "expand_v"):
            dim = self.hidden_size * getattr(self, name)
            if dim != int(dim) or int(dim) % self.num_heads:
                raise OptionError(name, f": hidden_size * {name} = {dim} must be an integer divisible by num_heads "
                                        f"({self.num_heads})")
        if self.scale is not None:
            normalise("scale", check_positive("scale", self.scale))
        normalise("conv_size", check_int("conv_size", self.conv_size, 2))
        for name in ("use_short_conv", "conv_bias", "feature_map_after_conv", "use_output_norm", "output_norm_affine",
                     "qkv_bias", "gate_bias"):
            normalise(name, check_flag(name, getattr(self, name)))
        _choice("feature_map", self.feature_map, FEATURE_MAPS)
        _choice("forget_gate", self.forget_gate, FORGET_GATES)
        _choice("slot_read", self.slot_read, SLOT_READS)
        self._check_feature_map()
        if not self.output_norm_affine and not self.use_output_norm:
            raise OptionError("output_norm_affine", "=False needs use_output_norm=True (it removes that norm's gain)")
        if self.gate_bias and self.forget_gate != "data":
            raise OptionError("gate_bias", f"=True biases the data-dependent gate's W_f; forget_gate="
                                           f"{self.forget_gate!r} has none")
        normalise("gate_bias_range", check_gate_bias_range(self.gate_bias_range, self.gate_bias))
        self._check_window()

    def _check_feature_map(self) -> None:
        """The feature map and convolution options make one layer: identity needs no convolution (its SiLU would be
        a feature map), and without feature_map_after_conv the convolution's SiLU is the feature map, so it must be
        swish."""
        if self.feature_map in ("identity", "learned") and self.use_short_conv:
            raise OptionError("feature_map", f"={self.feature_map!r} needs use_short_conv=False (the convolution "
                                             "has its own SiLU)")
        if self.feature_map == "relu" and self.use_short_conv and not self.feature_map_after_conv:
            raise OptionError("feature_map", "='relu' with use_short_conv needs feature_map_after_conv=True (fla's "
                                             "layer: ReLU after the convolution's SiLU); without it the convolution's "
                                             "SiLU is the map")
        for name in ("feature_map_after_conv", "conv_bias"):
            if getattr(self, name) and not self.use_short_conv:
                raise OptionError(name, "=True needs use_short_conv=True")

    def _check_window(self) -> None:
        for name in ("window_size", "num_sink_tokens"):
            object.__setattr__(self, name, check_int(name, getattr(self, name), 0))
        if self.num_sink_tokens and not self.window_size:
            raise OptionError("num_sink_tokens", f"={self.num_sink_tokens} needs window_size > 0")
        if self.window_size and self.head_k_dim % 2:
            raise OptionError("window_size", f" > 0 applies RoPE, which needs an even head_k_dim, got "
                                             f"{self.head_k_dim}")

    @property
    def head_k_dim(self) -> int:
        return int(self.hidden_size * self.expand_k) // self.num_heads

    @property
    def head_v_dim(self) -> int:
        return int(self.hidden_size * self.expand_v) // self.num_heads
