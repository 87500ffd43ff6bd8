"""gsa: Gated Slot Attention (Zhang et al., NeurIPS 2024).

Kernels (`gsa.ops`), layers (`gsa.nn`), Hugging Face models (`gsa.models`), training, evaluation and
Transformer-to-RNN conversion. Importing `gsa` registers the model with transformers' Auto classes; it never
imports triton (the Triton backend is loaded on first use).
"""

from gsa.models import GSACache, GSAConfig, GSAForCausalLM, GSAModel
from gsa.ops import gated_slot_attention

__version__ = "0.1.0"

__all__ = ["GSACache", "GSAConfig", "GSAForCausalLM", "GSAModel", "gated_slot_attention", "__version__"]
