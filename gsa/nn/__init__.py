"""Modules: the GSA layer and the pieces of a decoder block. Imports torch and gsa.ops, never transformers."""

from gsa.nn.attention import GatedSlotAttention
from gsa.nn.conv import ShortConvolution
from gsa.nn.gates import SlotGateProjection
from gsa.nn.mlp import SwiGLU
from gsa.nn.norm import RMSNorm
from gsa.nn.options import LayerOptions
from gsa.nn.state import GSAState

__all__ = ["GSAState", "GatedSlotAttention", "LayerOptions", "RMSNorm", "ShortConvolution", "SlotGateProjection", "SwiGLU"]
