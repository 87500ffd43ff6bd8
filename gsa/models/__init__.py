"""Hugging Face models: GSAConfig, GSAModel, GSAForCausalLM, GSACache.

Importing this package registers "gated_slot_attention" (GSAConfig.model_type) with AutoConfig, AutoModel and
AutoModelForCausalLM, so that `AutoModelForCausalLM.from_pretrained(path)` works after `import gsa.models`; likewise
"zoology", the MQAR benchmark harness (gsa.models.zoology: Zoology's model around our mixers), so that
`gsa eval mqar` scores it too. "gsa" is fla's model type; see gsa.models.registration for how the two coexist.
"""

from gsa.models.cache import GSACache
from gsa.models.configuration import GSAConfig
from gsa.models.decoding import StaticDecoder
from gsa.models.modeling import GSAForCausalLM, GSAModel, GSAPreTrainedModel
from gsa.models.registration import register_auto_classes
from gsa.models.zoology import ZoologyConfig, ZoologyForCausalLM, ZoologyModel  # noqa: F401

register_auto_classes()

__all__ = ["GSACache", "GSAConfig", "GSAForCausalLM", "GSAModel", "GSAPreTrainedModel", "StaticDecoder"]
