"""gsa: Gated Slot Attention (Zhang et al., NeurIPS 2024).

Kernels (`gsa.ops`), layers (`gsa.nn`), Hugging Face models (`gsa.models`), training, evaluation and
Transformer-to-RNN conversion. `import gsa` is cheap (no torch, transformers or triton) so that the `gsa` command
starts at once; the names below load on first use. Importing `gsa.models` (which touching any model name below
does) registers the model with transformers' Auto classes.
"""

from gsa.lazy import lazy_exports

__version__ = "0.1.0"

__all__ = ["GSACache", "GSAConfig", "GSAForCausalLM", "GSAModel", "gated_slot_attention", "__version__"]

lazy_exports(__name__, {
    "GSACache": "gsa.models", "GSAConfig": "gsa.models", "GSAForCausalLM": "gsa.models", "GSAModel": "gsa.models",
    "gated_slot_attention": "gsa.ops",
})
