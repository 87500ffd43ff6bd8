"""T2R in the trainer: convert a teacher, then stage 1 (attention transfer) and stage 2 (logit distillation)."""

import pytest
import torch

from convert.convert_teachers import tiny_teacher
from gsa.convert import from_pretrained_transformer  # also registers model type "t2r" and distillation
from gsa.errors import InputError
from gsa.models import GSAForCausalLM
from gsa.train import load_config
from gsa.train.loop import train
from gsa.train.metrics import read_metrics
from train.helpers import TINY, tiny_overrides


@pytest.fixture
def teacher_dir(tmp_path):
    path = tmp_path / "teacher"
    # vocab 300 covers the byte tokenizer's 257 ids; a sharper teacher than HF's init, as in tests/convert
    tiny_teacher("llama", vocab_size=300, initializer_range=0.2).save_pretrained(path)
    return path


def _run(data_cache, out, model, stage, teacher, steps=24, lr=3e-3, extra=()):
    overrides = tiny_overrides(data_cache, out, **{
        "data.tokenizer": "byte", "data.documents": False, "data.seq_len": 64, "train.max_steps": steps,
        "train.micro_batch_size": 4, "optim.warmup_steps": 1, "optim.lr": lr, "distill.teacher": str(teacher),
        "distill.stage": stage,
    })
    overrides += [f'model={{type = "{model[0]}", {model[1]} = "{model[2]}"{model[3]}}}', *extra]
    summary = train(load_config(TINY, overrides))
    losses = [r["loss"] for r in read_metrics(out) if "loss" in r]
    return summary, losses


def _falls(losses):
    """Mean of the last three steps under 80% of the first three's (each step sees a different batch)."""
    return sum(losses[-3:]) < 0.8 * sum(losses[:3])


@pytest.mark.slow
def test_two_stage_distillation(data_cache, tmp_path, teacher_dir):
    # stage 1: only the new slot/gate projections learn to reproduce each teacher attention layer's output
    s1, losses = _run(data_cache, tmp_path / "s1", ("t2r", "teacher", teacher_dir, ", num_slots = 8, init_std = 0.1"),
                      "attention", teacher_dir, lr=3e-2)
    assert _falls(losses), [round(x, 4) for x in losses]
    before = from_pretrained_transformer(teacher_dir, num_slots=8, init_std=0.1).state_dict()
    after = GSAForCausalLM.from_pretrained(s1["model_dir"]).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".f_proj." in k for k in changed), changed

    # stage 2: the whole student, KL to the teacher's logits, starting from stage 1's model
    s2, losses = _run(data_cache, tmp_path / "s2", ("pretrained", "path", s1["model_dir"], ""), "logits",
                      teacher_dir)
    assert _falls(losses), [round(x, 4) for x in losses]
    assert "eval_ppl" in s2


def test_hybrid_stage_one_trains_the_slots_and_their_share(data_cache, tmp_path, teacher_dir):
    """A hybrid student (window 8 + 2 sinks of 64 tokens) through the trainer: stage 1 on f_proj and memory_scale
    lowers the loss and changes those parameters only; the saved model reloads as a hybrid."""
    model = ("t2r", "teacher", teacher_dir, ", num_slots = 8, init_std = 0.1, window_size = 8, num_sink_tokens = 2")
    s1, losses = _run(data_cache, tmp_path / "h1", model, "attention", teacher_dir, lr=3e-2,
                      extra=['distill.train_params=["f_proj", "memory_scale"]'])
    assert _falls(losses), [round(x, 4) for x in losses]
    student = GSAForCausalLM.from_pretrained(s1["model_dir"])
    assert (student.config.window_size, student.config.num_sink_tokens) == (8, 2)
    before = from_pretrained_transformer(teacher_dir, num_slots=8, init_std=0.1, window_size=8,
                                         num_sink_tokens=2).state_dict()
    after = student.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".f_proj." in k or k.endswith(".memory_scale") for k in changed), changed
    assert any(k.endswith(".memory_scale") for k in changed)


def test_passkey_answer_weight_reaches_the_stage_two_loss(data_cache, tmp_path, teacher_dir):
    """Stage 2 with passkey rows: the same run with distill.answer_weight = 1 starts higher by the answers'
    cross-entropy (same seed, batches and KL) and trains."""
    model = ("t2r", "teacher", teacher_dir, ", num_slots = 8, init_std = 0.1")
    common = ["data.seq_len=256", "data.passkey_fraction=0.5"]
    _, plain = _run(data_cache, tmp_path / "p0", model, "logits", teacher_dir, steps=2, extra=common)
    _, weighted = _run(data_cache, tmp_path / "p1", model, "logits", teacher_dir, steps=2,
                       extra=common + ["distill.answer_weight=1.0"])
    assert weighted[0] > plain[0] + 0.5, (plain, weighted)  # byte-level answers: CE ~ log(300) a token untrained
    assert all(torch.isfinite(torch.tensor(weighted)))


def test_passkey_answer_weight_reaches_the_stage_one_loss(data_cache, tmp_path, teacher_dir):
    """Stage 1 with passkey rows: distill.answer_weight adds the answer positions' own output MSE (same batches)."""
    model = ("t2r", "teacher", teacher_dir, ", num_slots = 8, init_std = 0.1, window_size = 8, num_sink_tokens = 2")
    common = ["data.seq_len=256", "data.passkey_fraction=0.5", 'distill.train_params=["f_proj", "memory_scale"]']
    _, plain = _run(data_cache, tmp_path / "a0", model, "attention", teacher_dir, steps=2, extra=common)
    _, weighted = _run(data_cache, tmp_path / "a1", model, "attention", teacher_dir, steps=2,
                       extra=common + ["distill.answer_weight=1.0"])
    assert weighted[0] > plain[0] and all(torch.isfinite(torch.tensor(weighted))), (plain, weighted)


def test_distillation_config_errors(tmp_path):
    with pytest.raises(ValueError, match="data.documents = false"):
        load_config(TINY, [f'distill.teacher="{tmp_path}"'])
    with pytest.raises(ValueError, match="distill.stage"):
        load_config(TINY, ['distill.stage="both"'])
    with pytest.raises(InputError, match="needs teacher = DIR"):
        from gsa.train.model import build_model

        build_model({"type": "t2r"}, 100)


def test_reinit_keeps_the_converted_architecture_only(teacher_dir):
    from gsa.train.model import build_model

    converted = from_pretrained_transformer(teacher_dir, num_slots=8)
    torch.manual_seed(0)
    scratch = build_model({"type": "t2r", "teacher": str(teacher_dir), "num_slots": 8, "reinit": True}, 257)
    assert scratch.config.to_dict() == converted.config.to_dict()
    a, b = converted.state_dict(), scratch.state_dict()
    assert a.keys() == b.keys()
    assert not any(torch.equal(a[k], b[k]) for k in a if k.endswith("proj.weight")), "weights were carried over"
