"""Hugging Face models: GSAConfig, GSAModel, GSAForCausalLM, GSACache.

Importing this package registers "gsa" with AutoConfig, AutoModel and AutoModelForCausalLM, so that
`AutoModelForCausalLM.from_pretrained(path)` works after `import gsa`; likewise "zoology", the MQAR benchmark
harness (gsa.models.zoology: Zoology's model around our mixers), so that `gsa eval mqar` scores it too.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from gsa.models.cache import GSACache
from gsa.models.configuration import GSAConfig
from gsa.models.decoding import StaticDecoder
from gsa.models.modeling import GSAForCausalLM, GSAModel, GSAPreTrainedModel
from gsa.models.zoology import ZoologyConfig, ZoologyForCausalLM, ZoologyModel

AutoConfig.register(GSAConfig.model_type, GSAConfig)
AutoModel.register(GSAConfig, GSAModel)
AutoModelForCausalLM.register(GSAConfig, GSAForCausalLM)
AutoConfig.register(ZoologyConfig.model_type, ZoologyConfig)
AutoModel.register(ZoologyConfig, ZoologyModel)
AutoModelForCausalLM.register(ZoologyConfig, ZoologyForCausalLM)

__all__ = ["GSACache", "GSAConfig", "GSAForCausalLM", "GSAModel", "GSAPreTrainedModel", "StaticDecoder"]
