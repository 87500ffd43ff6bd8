"""Transformer -> GSA conversion (T2R) and the distillation losses for finetuning the converted model.

`from_pretrained_transformer(src, ...)` turns a Llama / Mistral / Qwen2 checkpoint (or a GGUF file of one) into a
`GSAForCausalLM`; `convert(src, dst, ...)` also saves it (`gsa convert` on the command line). `gsa.convert.distill`
holds the two finetuning losses, `gsa.convert.baselines` the sliding-window + sinks teacher baseline. See
docs/convert.md for the config mapping (gsa/convert/transformer_config.py) and gsa/convert/transformer.py for the
initialisation choices.

`from_fla(src)` / `convert_fla(src, dst)` / `to_fla(model, dst)` (gsa.convert.fla) take fla's GSA checkpoints (the
paper's published models) to ours and back, with the same function.

Importing gsa.convert registers the trainer's `[model]` type "t2r" and its `[distill]` objective (gsa.convert.training).
"""

from gsa.convert import training  # noqa: F401  (registers with gsa.train.registry)
from gsa.convert.fla import convert_fla, from_fla, to_fla
from gsa.convert.transformer import convert, from_pretrained_transformer, weight_map
from gsa.convert.transformer_config import UnsupportedModelError, check_supported, gsa_config_from

__all__ = [
    "UnsupportedModelError",
    "check_supported",
    "convert",
    "convert_fla",
    "from_fla",
    "from_pretrained_transformer",
    "gsa_config_from",
    "to_fla",
    "weight_map",
]
