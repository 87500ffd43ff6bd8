"""LoRA through peft (gsa.train.lora): only the adapters (and the named full parameters) train, the merged weights
are base + (alpha / rank) B A, checkpoints hold the merged model and resume exactly."""

import shutil

import pytest
import torch

from gsa.errors import InputError
from gsa.models import GSAConfig, GSAForCausalLM
from gsa.train import load_config
from gsa.train.checkpoint import CheckpointError, list_checkpoints
from gsa.train.config_distill import LoraConfig
from gsa.train.loop import train
from gsa.train.metrics import read_metrics
from train.helpers import TINY, tiny_overrides

peft = pytest.importorskip("peft", reason="peft is not installed: the LoRA tests need it (pip install -e '.[lora]'; "
                                          "`make test` installs it with the dev extras)")

from gsa.train.lora import apply_lora, join_lora_state, split_lora_state  # noqa: E402  (after the peft check)


def _model():
    config = GSAConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_heads=4, num_kv_heads=2,
                       num_slots=4, intermediate_size=32, feature_map="learned", use_output_norm=False)
    torch.manual_seed(0)
    return GSAForCausalLM(config)


def test_only_adapters_and_named_parameters_train():
    model = _model()
    ids = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        before = model(ids).logits
    cfg = LoraConfig(rank=2, alpha=4.0, targets=["q_proj", "v_proj"], train_full=["f_proj", "q_map"])
    trainable = apply_lora(model, cfg)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert len(trainable) == len(names)
    assert all(".lora_A." in n or ".lora_B." in n or ".f_proj." in n or ".q_map." in n for n in names), names
    assert sum(".lora_A." in n for n in names) == 2 * 2  # layers x (q_proj, v_proj)
    assert not any("k_map" in n or "base_layer" in n or "mlp" in n for n in names)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, before, rtol=0, atol=0)  # B = 0: the base model
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.Adam(trainable, lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        model(ids, labels=ids).loss.backward()
        opt.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert model.model.layers[0].attn.q_proj.lora_B.default.weight.abs().max() > 0


def test_fusing_projections_under_adapters_is_refused():
    # the fused product reads the base weights only: decoding would silently drop the adapters
    model = _model()
    apply_lora(model, LoraConfig(rank=2, alpha=4.0, targets=["q_proj"]))
    with pytest.raises(ValueError, match="plain nn.Linear projections, got \\['Linear'\\]"):
        model.fuse_projections()
    mlp_model = _model()
    apply_lora(mlp_model, LoraConfig(rank=2, alpha=4.0, targets=["up_proj"]))
    with pytest.raises(ValueError, match="merge adapters"):
        mlp_model.fuse_projections()


def test_merged_weights_are_base_plus_scaled_ba_and_compute_the_same():
    model = _model()
    apply_lora(model, LoraConfig(rank=2, alpha=6.0, targets=["q_proj", "o_proj"]))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_" in n:
                p.normal_()  # B A != 0
    state = model.state_dict()
    plain, adapters = split_lora_state(state, 6.0 / 2)
    q = "model.layers.1.attn.q_proj"
    a, b = state[f"{q}.lora_A.default.weight"], state[f"{q}.lora_B.default.weight"]
    torch.testing.assert_close(plain[f"{q}.weight"], state[f"{q}.base_layer.weight"] + 3.0 * b @ a)
    delta = model.model.layers[1].attn.q_proj.get_delta_weight("default")  # peft's own merge
    torch.testing.assert_close(plain[f"{q}.weight"], state[f"{q}.base_layer.weight"] + delta)
    merged = GSAForCausalLM(model.config)
    merged.load_state_dict(plain, strict=True)  # exactly the plain model's tensors
    ids = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)
    joined = join_lora_state(plain, adapters)
    assert joined.keys() == state.keys() and all(torch.equal(joined[k], state[k]) for k in state)


def test_bad_lora_settings_name_the_key():
    model = _model()
    with pytest.raises(InputError, match="lora.targets"):
        apply_lora(model, LoraConfig(rank=2, targets=["nonexistent_proj"]))
    with pytest.raises(InputError, match="lora.train_full"):
        apply_lora(_model(), LoraConfig(rank=2, train_full=["nope"]))
    for overrides, key in ((["lora.rank=-1"], "lora.rank"), (["lora.rank=4", "lora.alpha=0"], "lora.alpha"),
                           (["lora.rank=4", "lora.targets=[]"], "lora.targets")):
        with pytest.raises(InputError, match=key):
            load_config(TINY, overrides)
    with pytest.raises(InputError, match="lora.rank > 0 with distill.stage"):
        load_config(TINY, ["lora.rank=4", 'distill.teacher="t"', 'distill.stage="attention"', "data.documents=false"])


def _losses(out):
    return [(r["step"], r["loss"]) for r in read_metrics(out) if "loss" in r]


def test_lora_run_publishes_the_merged_model_and_resumes_exactly(data_cache, tmp_path):
    """6 steps of LoRA on the tiny language model: the published model is a plain GSA model whose only changed
    tensors are the adapted ones; resuming from step 3 reproduces the loss curve and the model exactly; a run
    without [lora] refuses the checkpoint."""
    out = tmp_path / "lora"
    over = tiny_overrides(data_cache, out, **{"train.max_steps": 6, "train.checkpoint_every": 3,
                                              "train.keep_checkpoints": 4, "lora.rank": 4,
                                              "optim.warmup_steps": 1})
    over.append('lora.targets=["q_proj", "o_proj"]')
    summary = train(load_config(TINY, over))
    model = GSAForCausalLM.from_pretrained(summary["model_dir"])
    first = GSAForCausalLM.from_pretrained(out / "checkpoints" / "step_00000003" / "model")
    changed = {k for k, v in first.state_dict().items() if not torch.equal(v, model.state_dict()[k])}
    assert changed and all(k.endswith(("q_proj.weight", "o_proj.weight")) for k in changed), changed

    again = tmp_path / "again"
    shutil.copytree(out, again)
    shutil.rmtree(list_checkpoints(again)[-1])
    shutil.rmtree(again / "model")
    over_again = [o for o in over if not o.startswith("output_dir=")] + [f'output_dir="{again}"']
    resumed = train(load_config(TINY, over_again), resume=True)
    assert _losses(again) == _losses(out)
    final = GSAForCausalLM.from_pretrained(resumed["model_dir"]).state_dict()
    assert all(torch.equal(final[k], v) for k, v in model.state_dict().items())
    plain = [o for o in over_again if not o.startswith(("lora.", "output_dir="))] + [f'output_dir="{again}"']
    with pytest.raises(CheckpointError, match="lora"):
        train(load_config(TINY, plain), resume=True)


def test_resuming_with_another_lora_scaling_is_refused(tmp_path):
    """lora.safetensors holds B and A, not alpha: resumed with another lora.alpha (same rank, so every shape fits)
    the adapted layers would compute W + (alpha' / rank) B A, another model than the one trained."""
    from gsa.train.checkpointer import Checkpointer
    from gsa.train.config import DataConfig
    from gsa.train.distributed import Dist

    model = _model()
    apply_lora(model, LoraConfig(rank=2, alpha=4.0, targets=["q_proj"]))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    d = Dist(0, 1, 0, torch.device("cpu"))
    saved = Checkpointer(tmp_path, d, 2, None, DataConfig(), lora_scaling=2.0).save(model, opt, sched, 1)
    assert Checkpointer(tmp_path, d, 2, None, DataConfig(), lora_scaling=2.0).load(saved, model, opt, sched) == 1
    with pytest.raises(CheckpointError, match=r"lora.alpha / lora.rank = 2.0, this run has 4.0"):
        Checkpointer(tmp_path, d, 2, None, DataConfig(), lora_scaling=4.0).load(saved, model, opt, sched)
