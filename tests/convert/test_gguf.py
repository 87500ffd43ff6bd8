"""The GGUF path: a tiny Llama written as a float32 GGUF file (with the gguf package's writer) converts exactly."""

import pytest
import torch

gguf = pytest.importorskip("gguf", reason="the GGUF path needs the gguf package (pip install -e '.[convert]')")
pytest.importorskip("accelerate", reason="transformers' GGUF loading needs accelerate (pip install -e '.[convert]')")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

import gsa.models  # noqa: E402,F401
from gsa.cli import main  # noqa: E402
from convert_teachers import make_teacher  # noqa: E402,F401  (a fixture)
from gsa.convert import weight_map  # noqa: E402

_LAYER_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}
_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
          "lm_head.weight": "output.weight"}


def _llama_cpp_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's q/k row order (interleaved RoPE pairs); transformers' GGUF loader undoes it."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def write_gguf(model, path) -> None:
    """model: an untied float32 LlamaForCausalLM -> a llama GGUF file (F32 tensors, a byte-level BPE vocabulary)."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens = ["<pad>", "<s>", "</s>", "<unk>"] + [chr(97 + i % 26) * (1 + i // 26) for i in range(cfg.vocab_size - 4)]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3, 2] + [1] * (len(tokens) - 4))
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_merges([])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    for key, t in model.state_dict().items():
        if key in _NAMES:
            w.add_tensor(_NAMES[key], t.numpy())
            continue
        parts = key.split(".")
        kind = ".".join(parts[3:-1])
        if kind == "self_attn.q_proj":
            t = _llama_cpp_permute(t, cfg.num_attention_heads)
        elif kind == "self_attn.k_proj":
            t = _llama_cpp_permute(t, cfg.num_key_value_heads)
        w.add_tensor(f"blk.{parts[2]}.{_LAYER_NAMES[kind]}.weight", t.contiguous().numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_teacher_converts_exactly(make_teacher, tmp_path):
    teacher = make_teacher("llama", tie_word_embeddings=False)
    src = tmp_path / "gguf"
    src.mkdir()
    write_gguf(teacher, src / "tiny.gguf")
    dst = tmp_path / "student"
    assert main(["convert", "--from", str(src), "--gguf-file", "tiny.gguf", "--to", str(dst), "--num-slots", "4"]) == 0

    student = AutoModelForCausalLM.from_pretrained(dst)
    assert student.dtype == torch.float32 and student.config.num_kv_heads == 2
    params = dict(student.named_parameters())
    for key, target in weight_map(teacher.state_dict()).items():  # the original tensors, through the GGUF file
        assert torch.equal(params[target], teacher.state_dict()[key]), key
    want = AutoTokenizer.from_pretrained(src, gguf_file="tiny.gguf")("abc")["input_ids"]
    assert AutoTokenizer.from_pretrained(dst)("abc")["input_ids"] == want
    ids = torch.tensor([want])
    out = student.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, len(want) + 3)
