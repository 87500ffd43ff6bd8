"""Conversion of tiny random Llama / Mistral / Qwen2 checkpoints into GSA models."""

import re

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from convert_teachers import make_teacher, save_teacher  # noqa: F401  (fixtures)
import gsa.models  # noqa: F401  (registers "gsa" with the Auto classes)
from gsa.cli import main
from gsa.convert import UnsupportedModelError, convert, from_pretrained_transformer, weight_map
from gsa.models import GSAForCausalLM

CASES = [("llama", False), ("llama", True), ("mistral", False), ("qwen2", True), ("qwen2", False)]


def _assert_carried(teacher, student):
    """Every teacher tensor equals (bitwise, same dtype) the student parameter it maps to."""
    s_params = dict(student.named_parameters(remove_duplicate=False))
    t_state = teacher.state_dict()
    mapping = weight_map(t_state)
    assert len(mapping) == len(t_state)
    for key, target in mapping.items():
        assert s_params[target].dtype == t_state[key].dtype, key
        assert torch.equal(s_params[target], t_state[key]), f"{key} -> {target} not carried bitwise"
    layers = teacher.config.num_hidden_layers
    new = {n for n in s_params if n not in set(mapping.values())}
    if student.config.tie_word_embeddings:
        new.discard("lm_head.weight")
    made = ("weight", "bias") if student.config.gate_bias else ("weight",)
    assert new == {f"model.layers.{i}.attn.f_proj.{p}" for i in range(layers) for p in made}


@pytest.mark.parametrize("arch,tie", CASES)
def test_convert_carries_every_tensor_and_reloads(save_teacher, tmp_path, arch, tie):
    src, teacher = save_teacher(arch, tie_word_embeddings=tie)
    dst = convert(src, tmp_path / "student", num_slots=8)
    student = AutoModelForCausalLM.from_pretrained(dst).eval()
    assert type(student) is GSAForCausalLM
    c = student.config
    assert (c.num_heads, c.num_kv_heads, c.head_k_dim, c.num_slots) == (6, 2, 8, 8)
    assert (c.qkv_bias, c.feature_map, c.use_output_norm) == (arch == "qwen2", "identity", False)
    assert c.tie_word_embeddings == tie and c.intermediate_size == 80 and c.norm_eps == 1e-5
    tied = student.lm_head.weight.data_ptr() == student.model.embed_tokens.weight.data_ptr()
    assert tied == tie
    _assert_carried(teacher, student)

    ids = torch.randint(3, 97, (2, 13))
    with torch.no_grad():
        logits = student(ids).logits
    assert logits.shape == (2, 13, 97) and torch.isfinite(logits).all()
    out = student.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
    assert out.shape == (2, 17)


def test_bfloat16_teacher_stays_bfloat16_and_bitwise(save_teacher, tmp_path):
    src, teacher = save_teacher("qwen2", dtype=torch.bfloat16)
    student = from_pretrained_transformer(src, num_slots=4)
    assert student.dtype == torch.bfloat16
    _assert_carried(teacher, student)


def test_f_proj_init_is_seeded_and_scaled(make_teacher):
    teacher = make_teacher("llama", num_hidden_layers=3)
    a = from_pretrained_transformer(teacher, num_slots=16, init_std=0.05, seed=1)
    b = from_pretrained_transformer(teacher, num_slots=16, init_std=0.05, seed=1)
    c = from_pretrained_transformer(teacher, num_slots=16, init_std=0.05, seed=2)
    fa = [blk.attn.f_proj.weight for blk in a.model.layers]
    assert all(torch.equal(x, y.attn.f_proj.weight) for x, y in zip(fa, b.model.layers))
    assert not torch.equal(fa[0], c.model.layers[0].attn.f_proj.weight)
    assert not torch.equal(fa[0], fa[1])  # layers differ
    w = torch.cat(fa)
    assert w.shape == (3 * 2 * 16, 48) and abs(w.std().item() - 0.05) < 0.005 and abs(w.mean().item()) < 0.005

    keys = from_pretrained_transformer(teacher, num_slots=16, init="keys", init_std=0.05)
    for blk, t_layer in zip(keys.model.layers, teacher.model.layers):
        f = blk.attn.f_proj.weight.view(2, 16, 48)
        torch.testing.assert_close(f.norm(dim=-1), torch.full((2, 16), 0.05 * 48**0.5))
        wk = t_layer.self_attn.k_proj.weight.view(2, 8, 48)
        for h in range(2):  # every slot row lies in the span of its own kv head's key rows
            coef = torch.linalg.lstsq(wk[h].T, f[h].T).solution
            torch.testing.assert_close(wk[h].T @ coef, f[h].T, atol=1e-5, rtol=1e-4)


def test_options_reach_the_config(make_teacher):
    s = from_pretrained_transformer(
        make_teacher("mistral"), num_slots=5, gate_logit_normalizer=16.0, feature_map="swish",
        use_output_norm=True, dtype=torch.float64,
    )
    c = s.config
    assert (c.num_slots, c.gate_logit_normalizer, c.feature_map, c.use_output_norm) == (5, 16.0, "swish", True)
    assert s.dtype == torch.float64
    assert torch.equal(s.model.layers[0].attn.o_norm.weight, torch.ones(48, dtype=torch.float64))
    with pytest.raises(ValueError, match="init"):
        from_pretrained_transformer(make_teacher(), init="zeros")
    h = from_pretrained_transformer(make_teacher(), window_size=6, num_sink_tokens=3)
    assert (h.config.window_size, h.config.num_sink_tokens) == (6, 3)
    assert all(torch.equal(b.attn.memory_scale, torch.zeros(6)) for b in h.model.layers)


def _refused(argv, capsys, message):
    """`gsa convert` refuses with one line naming `message` and exit status 2."""
    capsys.readouterr()
    assert main(argv) == 2
    assert re.search(message, capsys.readouterr().err.strip().splitlines()[-1].split("gsa convert: error: ", 1)[1])


def test_cli_window_options(save_teacher, tmp_path, capsys):
    src, _ = save_teacher("llama")
    assert main(["convert", "--from", str(src), "--to", str(tmp_path / "h"), "--window", "8", "--sinks", "2"]) == 0
    c = GSAForCausalLM.from_pretrained(tmp_path / "h").config
    assert (c.window_size, c.num_sink_tokens) == (8, 2)
    _refused(["convert", "--from", str(src), "--to", str(tmp_path / "x"), "--sinks", "2"], capsys, "num_sink_tokens")


def test_cli_gate_bias(save_teacher, tmp_path):
    """--gate-bias: the student's f_proj has the spread bias (and the teacher's tensors are still carried)."""
    src, teacher = save_teacher("mistral")
    assert main(["convert", "--from", str(src), "--to", str(tmp_path / "g"), "--gate-bias"]) == 0
    student = GSAForCausalLM.from_pretrained(tmp_path / "g")
    assert student.config.gate_bias
    for block in student.model.layers:
        f = block.attn.f_proj
        torch.testing.assert_close(f.bias, f.spread_bias(), rtol=0, atol=0)
    _assert_carried(teacher, student)


def test_cli_converts_with_tokenizer(save_teacher, tmp_path, capsys):
    src, teacher = save_teacher("llama", tokenizer=True)
    dst = tmp_path / "out"
    assert main(["convert", "--from", str(src), "--to", str(dst), "--num-slots", "4", "--init", "keys"]) == 0
    assert "wrote" in capsys.readouterr().out
    want = AutoTokenizer.from_pretrained(src)("w5 w6").input_ids
    assert AutoTokenizer.from_pretrained(dst)("w5 w6").input_ids == want
    student = AutoModelForCausalLM.from_pretrained(dst)
    assert student.config.num_slots == 4
    _assert_carried(teacher, student)
    assert main(["generate", "--model", str(dst), "--prompt", "w5 w6", "--max-new-tokens", "3"]) == 0


UNSUPPORTED = [
    ("mistral", {"sliding_window": 16}, "sliding_window"),
    ("qwen2", {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": 0}, "sliding"),
    ("llama", {"hidden_act": "gelu"}, "hidden_act"),
    ("llama", {"attention_bias": True}, "attention_bias"),
    ("llama", {"mlp_bias": True}, "mlp_bias"),
    ("llama", {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}}, "rope_type"),
]


@pytest.mark.parametrize("arch,overrides,field", UNSUPPORTED)
def test_unsupported_configs_are_refused_by_name(save_teacher, tmp_path, capsys, arch, overrides, field):
    src, _ = save_teacher(arch, **overrides)
    with pytest.raises(UnsupportedModelError, match=field):
        convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    _refused(["convert", "--from", str(src), "--to", str(tmp_path / "out")], capsys, field)


def test_other_architectures_are_refused(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    src = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32)).save_pretrained(src)
    with pytest.raises(UnsupportedModelError, match="model_type='gpt2'"):
        convert(src, tmp_path / "out")


def test_cli_refuses_invalid_options(save_teacher, tmp_path, capsys):
    src, _ = save_teacher("llama")
    _refused(["convert", "--from", str(src), "--to", str(tmp_path / "out"), "--num-slots", "0"], capsys, "num_slots")
    _refused(["convert", "--from", str(tmp_path / "missing"), "--to", str(tmp_path / "out")], capsys,
             "not a directory")
