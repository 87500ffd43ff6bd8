"""Registration with transformers' Auto classes, side by side with fla (flash-linear-attention).

Our models are "gated_slot_attention" (GSAConfig.model_type); fla's GSA models are "gsa". Directories of ours saved
before under "gsa" still load: `GSAConfig` / `GSAForCausalLM.from_pretrained` always (GSAConfig.get_config_dict
tells the two formats apart by their keys), and the Auto classes through `LegacyGSAConfig` as long as nobody else
holds "gsa". fla registers "gsa" on import (replacing ours if gsa came first), and when fla was imported first we
leave its registration alone, so after `import gsa.models, fla` in either order "gsa" is fla's and "gated_slot_attention"
ours. An fla checkpoint is converted with `gsa convert` (gsa.convert.fla).
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from gsa.models.configuration import FLA_HINT, LEGACY_MODEL_TYPE, GSAConfig, looks_like_fla
from gsa.models.modeling import GSAForCausalLM, GSAModel
from gsa.models.zoology import ZoologyConfig, ZoologyForCausalLM, ZoologyModel


class LegacyGSAConfig(GSAConfig):
    """AutoConfig's reader for "gsa" while fla is not imported: a config dict of ours becomes a GSAConfig (so the
    Auto model classes build GSAForCausalLM); an fla one is refused with how to load or convert it."""

    model_type = LEGACY_MODEL_TYPE

    def __init__(self, *args, **kwargs):
        raise TypeError(f"build a GSAConfig (model_type {GSAConfig.model_type!r}); {LEGACY_MODEL_TYPE!r} is only "
                        "read from directories saved under that name")

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs) -> GSAConfig:
        if looks_like_fla(config_dict):
            raise ValueError(f"{FLA_HINT}; or `import fla` first to load it with fla's own classes")
        return GSAConfig.from_dict({**config_dict, "model_type": GSAConfig.model_type}, **kwargs)


def register_auto_classes() -> None:
    """Register our model types (and "gsa" for our older directories, unless another library holds it)."""
    AutoConfig.register(GSAConfig.model_type, GSAConfig)
    AutoModel.register(GSAConfig, GSAModel)
    AutoModelForCausalLM.register(GSAConfig, GSAForCausalLM)
    if LEGACY_MODEL_TYPE not in CONFIG_MAPPING:
        AutoConfig.register(LEGACY_MODEL_TYPE, LegacyGSAConfig)
    AutoConfig.register(ZoologyConfig.model_type, ZoologyConfig)
    AutoModel.register(ZoologyConfig, ZoologyModel)
    AutoModelForCausalLM.register(ZoologyConfig, ZoologyForCausalLM)
