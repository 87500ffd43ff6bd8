"""The pure-student ingredients in the trainer: stage "feature_map" (the Hedgehog fit of learned maps), gate init
from the teacher's attention spans, and the errors that name their keys."""

import sys

import pytest
import torch

from convert.convert_teachers import tiny_teacher
from gsa.convert import from_pretrained_transformer
from gsa.convert.gate_init import init_gates_from_spans
from gsa.errors import InputError
from gsa.models import GSAForCausalLM
from gsa.train import load_config
from gsa.train.config_distill import LoraConfig
from gsa.train.distributed import teardown
from gsa.train.loop import Trainer
from gsa.train.metrics import read_metrics
from train.helpers import TINY, tiny_overrides

STUDENT = ", num_slots = 8, init_std = 0.1, feature_map = \"learned\", gate_bias = true"


@pytest.fixture
def teacher_dir(tmp_path):
    path = tmp_path / "teacher"
    tiny_teacher("llama", vocab_size=300, initializer_range=0.2).save_pretrained(path)
    return path


def _config(data_cache, out, teacher, student=STUDENT, extra=()):
    overrides = tiny_overrides(data_cache, out, **{
        "data.tokenizer": "byte", "data.documents": False, "data.seq_len": 64, "train.max_steps": 24,
        "train.micro_batch_size": 4, "optim.warmup_steps": 1, "optim.lr": 1e-2, "distill.teacher": str(teacher),
        "distill.stage": "feature_map",
    })
    overrides += [f'model={{type = "t2r", teacher = "{teacher}"{student}}}', 'distill.train_params=["q_map", "k_map"]',
                  *extra]
    return load_config(TINY, overrides)


def test_feature_map_stage_with_gate_init(data_cache, tmp_path, teacher_dir):
    """Gate biases set from the teacher's spans on the first 6 training windows before training (as
    init_gates_from_spans gives on those windows, in chunks of another size); then stage "feature_map" lowers its KL
    and moves the maps only."""
    out = tmp_path / "fmap"
    cfg = _config(data_cache, out, teacher_dir, extra=['distill.gate_init="teacher_span"',
                                                       "distill.gate_init_sequences=6"])
    trainer = Trainer(cfg)
    try:
        start = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        want = from_pretrained_transformer(teacher_dir, num_slots=8, init_std=0.1, feature_map="learned",
                                           gate_bias=True)
        init_gates_from_spans(want, trainer.distillation.teacher, trainer._first_windows(6), batch_size=5)
        for i, block in enumerate(want.model.layers):
            torch.testing.assert_close(start[f"model.layers.{i}.attn.f_proj.bias"], block.attn.f_proj.bias)
        first = want.model.layers[0].attn.f_proj
        assert not torch.equal(first.bias, first.spread_bias())  # not the default spread
        summary = trainer.fit()
    finally:
        teardown()
    losses = [r["loss"] for r in read_metrics(out) if "loss" in r]
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3]), [round(x, 4) for x in losses]
    after = GSAForCausalLM.from_pretrained(summary["model_dir"]).state_dict()
    changed = {k for k in start if not torch.equal(start[k], after[k])}
    assert changed and all(".q_map." in k or ".k_map." in k for k in changed), changed


def test_pure_student_config_errors(data_cache, tmp_path, teacher_dir, monkeypatch):
    with pytest.raises(InputError, match="distill.train_params"):
        _config(data_cache, tmp_path / "a", teacher_dir, extra=['distill.train_params=["f_proj"]'])
    with pytest.raises(InputError, match="distill.gate_init"):
        load_config(TINY, ['distill.gate_init="teacher_span"'])
    with pytest.raises(InputError, match="distill.gate_init"):
        load_config(TINY, ['distill.gate_init="spans"'])
    with pytest.raises(InputError, match="distill.gate_init_sequences"):
        _config(data_cache, tmp_path / "b", teacher_dir,
                extra=['distill.gate_init="teacher_span"', "distill.gate_init_sequences=0"])
    with pytest.raises(InputError, match="distill.gate_init_sinks >= 0, got 16, 0.0, -1"):
        _config(data_cache, tmp_path / "b", teacher_dir,
                extra=['distill.gate_init="teacher_span"', "distill.gate_init_sinks=-1"])
    cfg = _config(data_cache, tmp_path / "c", teacher_dir, student=", num_slots = 8, feature_map = \"learned\"",
                  extra=['distill.gate_init="teacher_span"'])
    with pytest.raises(InputError, match="distill.gate_init.*gate_bias=True"):
        try:
            Trainer(cfg)
        finally:
            teardown()
    # stage 1's maps on a student without them (the base rung's identity maps): refused, not f_proj alone trained
    cfg = _config(data_cache, tmp_path / "d", teacher_dir, student=", num_slots = 8",
                  extra=['distill.stage="attention"', 'distill.train_params=["f_proj", "q_map", "k_map"]'])
    with pytest.raises(InputError, match=r"distill.train_params.*\['k_map', 'q_map'\]"):
        try:
            Trainer(cfg)
        finally:
            teardown()
    from gsa.train.lora import apply_lora

    monkeypatch.setitem(sys.modules, "peft", None)  # as if not installed
    with pytest.raises(InputError, match="needs peft"):
        apply_lora(torch.nn.Linear(2, 2), LoraConfig(rank=2))
