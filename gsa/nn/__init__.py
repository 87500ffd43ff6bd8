"""Modules: the GSA layer and the pieces of a decoder block. Imports torch and gsa.ops, never transformers."""

from gsa.nn.attention import GatedSlotAttention, GSAState, SlotGateProjection
from gsa.nn.conv import ShortConvolution
from gsa.nn.mlp import SwiGLU
from gsa.nn.norm import RMSNorm

__all__ = ["GSAState", "GatedSlotAttention", "RMSNorm", "ShortConvolution", "SlotGateProjection", "SwiGLU"]
