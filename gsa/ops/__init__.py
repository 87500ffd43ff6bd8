"""The functional core: the GSA op and its references. Imports torch only (triton lazily)."""

from gsa.ops.api import BACKENDS, gated_slot_attention, gated_slot_attention_step, slot_gates
from gsa.ops.reference import parallel_reference, recurrent_reference

__all__ = ["BACKENDS", "gated_slot_attention", "gated_slot_attention_step", "parallel_reference",
           "recurrent_reference", "slot_gates"]
