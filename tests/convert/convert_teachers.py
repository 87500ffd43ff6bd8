"""Tiny random Llama / Mistral / Qwen2 teachers saved as local Hugging Face checkpoints (milliseconds each).

Not a conftest.py: tests/models imports names from its own `conftest`, and a second module of that name, collected
alongside, would replace it. Test modules here import the fixtures from this module instead.
"""

import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

ARCHS = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
}

TINY = dict(
    vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6,
    num_key_value_heads=2, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0,
)


def tiny_teacher(arch: str = "llama", seed: int = 0, dtype=torch.float32, **overrides):
    """A random teacher with grouped heads (6 query / 2 kv heads of 8); biases (Qwen2) and norms made non-trivial."""
    config_cls, model_cls = ARCHS[arch]
    extra = {"sliding_window": None} if arch == "mistral" else {}
    config = config_cls(**{**TINY, **extra, **overrides})
    torch.manual_seed(seed)
    model = model_cls(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:  # HF inits these to 0 / 1: make every tensor distinctive
                p.add_(torch.randn_like(p) * 0.1)
    return model.to(dtype).eval()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the tiny vocabulary (built offline)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{f"w{i}": i for i in range(4, TINY["vocab_size"])}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


@pytest.fixture
def make_teacher():
    """make_teacher(arch="llama", seed=0, dtype=torch.float32, **config overrides) -> an eval-mode teacher."""
    return tiny_teacher


@pytest.fixture
def save_teacher(tmp_path):
    """save_teacher(arch, tokenizer=False, **overrides) -> (directory, teacher model)."""

    def save(arch="llama", tokenizer=False, dtype=torch.float32, **overrides):
        model = tiny_teacher(arch, dtype=dtype, **overrides)
        path = tmp_path / f"teacher-{arch}"
        model.save_pretrained(path)
        if tokenizer:
            tiny_tokenizer().save_pretrained(path)
        return path, model

    return save
