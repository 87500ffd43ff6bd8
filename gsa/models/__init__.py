"""Hugging Face models: GSAConfig, GSAModel, GSAForCausalLM, GSACache.

Importing this package registers "gsa" with AutoConfig, AutoModel and AutoModelForCausalLM, so that
`AutoModelForCausalLM.from_pretrained(path)` works after `import gsa`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from gsa.models.cache import GSACache
from gsa.models.configuration import GSAConfig
from gsa.models.decoding import StaticDecoder
from gsa.models.modeling import GSAForCausalLM, GSAModel, GSAPreTrainedModel

AutoConfig.register(GSAConfig.model_type, GSAConfig)
AutoModel.register(GSAConfig, GSAModel)
AutoModelForCausalLM.register(GSAConfig, GSAForCausalLM)

__all__ = ["GSACache", "GSAConfig", "GSAForCausalLM", "GSAModel", "GSAPreTrainedModel", "StaticDecoder"]
