"""The Zoology MQAR harness (gsa/train/zoology.py): Zoology's model structure around our mixers, trained by the
trainer with [model] type = "zoology"."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.testing import CompileCounter

from gsa.cli import main as gsa_main
from gsa.eval.mqar import mqar_eval
from gsa.nn import GatedSlotAttention
from gsa.train import load_config
from gsa.train.metrics import read_metrics
import gsa.train.model as model_module
from gsa.train.model import apply_compile, build_model, labelled_positions_loss
from gsa.models.zoology import BaseConv, CausalAttention, ZoologyConfig, ZoologyForCausalLM

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

TOL = dict(atol=1e-10, rtol=1e-10)


def harness(mixer="gsa", **overrides) -> ZoologyForCausalLM:
    torch.manual_seed(0)
    cfg = dict(vocab_size=50, hidden_size=16, num_hidden_layers=4, mixer=mixer, num_heads=2, num_slots=5)
    return ZoologyForCausalLM(ZoologyConfig(**{**cfg, **overrides})).double().eval()


def test_layers_alternate_gated_convolution_and_mixer_without_mlp():
    kinds = {"gsa": GatedSlotAttention, "abc": GatedSlotAttention, "attention": CausalAttention}
    for mixer, cls in kinds.items():
        m = harness(mixer)
        mixers = [b.mixer for b in m.model.layers]
        assert [type(x) for x in mixers] == [BaseConv, cls, BaseConv, cls]
        assert not any("mlp" in n for n, _ in m.named_parameters())
        assert m.lm_head.weight is m.model.embed_tokens.weight  # tied, as Zoology's LanguageModel
    assert harness("abc").model.layers[1].mixer.forget_gate == "none"
    assert harness("gsa").model.layers[1].mixer.forget_gate == "data"


def test_gate_bias_reaches_the_layer_and_survives_the_init(tmp_path):
    m = harness("gsa", gate_bias=True, gate_bias_range=[4.0, 4.0])
    f = m.model.layers[1].mixer.f_proj
    assert torch.equal(f.bias, torch.full_like(f.bias, 4.0))  # every slot starts slow, not zeroed by the init
    m.save_pretrained(tmp_path)
    back = ZoologyForCausalLM.from_pretrained(tmp_path)
    assert back.config.gate_bias and torch.equal(back.model.layers[1].mixer.f_proj.bias, f.bias.float())
    with pytest.raises(ValueError, match="gate_bias"):
        ZoologyConfig(mixer="abc", gate_bias=True)


def test_zoology_init():
    torch.manual_seed(0)
    m = ZoologyForCausalLM(ZoologyConfig(vocab_size=3000, hidden_size=256, mixer="attention", num_hidden_layers=4))
    attn, conv = m.model.layers[1].mixer, m.model.layers[0].mixer
    assert abs(float(m.model.embed_tokens.weight.std()) - 0.02) < 1e-3
    assert abs(float(attn.Wqkv.weight.std()) - 0.02) < 1e-3 and float(attn.Wqkv.bias.abs().max()) == 0
    assert abs(float(attn.out_proj.weight.std()) - 0.02 / math.sqrt(8)) < 3e-4  # rescaled for the depth
    assert abs(float(conv.projection.weight.std()) - 0.02) < 1e-3
    bound = 1 / math.sqrt(3)  # nn.Conv1d's own init (fan-in = kernel 3), which Zoology keeps
    assert float(conv.conv.weight.abs().max()) <= bound and float(conv.conv.weight.std()) > 0.25


def test_base_conv_is_the_gated_causal_convolution():
    torch.manual_seed(1)
    layer = BaseConv(6, 3).double()
    u = torch.randn(2, 9, 6, dtype=torch.float64)
    w, b = layer.conv.weight[:, 0], layer.conv.bias  # [6, 3], [6]
    want = torch.empty_like(u)
    for t in range(9):
        acc = b.clone()
        for i in range(3):  # tap i reads u[t - 2 + i]
            if t - 2 + i >= 0:
                acc = acc + w[:, i] * u[:, t - 2 + i]
        want[:, t] = acc * (u[:, t] @ layer.projection.weight.T + layer.projection.bias) + u[:, t]
    torch.testing.assert_close(layer(u), want, **TOL)


def test_blocks_keep_the_residual_stream_in_batch_major_order():
    """A block maps the residual stream [B, T, d] to the next one, contiguous as it came: the gated convolution's
    transposed output once made the stream time-major from the first block on (and a compiled block recompile for
    the second layout)."""
    m = harness("gsa")
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    assert m.model.layers[0].mixer(x).is_contiguous()
    for block in m.model.layers:
        x = block(x)
        assert x.shape == (2, 11, 16) and x.is_contiguous()


@pytest.mark.slow  # ~17 s on a 2-core CPU, most of it torch.compile
def test_compiled_blocks_keep_their_graphs_over_the_mqar_shapes():
    """The trainer's compiled blocks (`train.compile`) over MQAR's shapes: three training lengths, then evaluation
    at other lengths and batch sizes without gradients, twice. Dynamo must never exhaust its recompile budget (past
    it the blocks silently run eagerly, from the first evaluation of an MQAR run on) and the second pass must
    compile nothing new."""
    m = harness("gsa").float()
    counter = CompileCounter()
    torch._dynamo.reset()
    apply_compile(m, backend=counter)

    def one_pass():
        m.train()
        for T in (64, 128, 256):
            ids = torch.randint(1, 50, (3, T))
            m(ids, labels=ids).loss.backward()
        m.eval()
        with torch.no_grad():
            for B, T in ((2, 512), (4, 256), (3, 512)):
                m(torch.randint(1, 50, (B, T)))

    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        one_pass()
        first = counter.frame_count
        one_pass()
    torch._dynamo.reset()
    assert 0 < first == counter.frame_count


def test_compile_budget_on_a_pytorch_without_a_per_call_limit(monkeypatch):
    """Where torch.compile takes no recompile_limit (older PyTorch), Dynamo's global budget is raised to 8 graphs per
    kind of block (2 kinds here), and never lowered."""
    monkeypatch.setattr(model_module, "_compile_takes_recompile_limit", lambda: False)
    for before, after in ((8, 16), (64, 64)):
        with torch._dynamo.config.patch(recompile_limit=before):  # (monkeypatch's undo breaks Dynamo's config)
            apply_compile(harness("gsa"), backend=CompileCounter())
            assert torch._dynamo.config.recompile_limit == after


@pytest.mark.parametrize("mixer", ["gsa", "abc", "attention"])
def test_causal_and_sparse_loss_equals_the_full_loss(mixer):
    m = harness(mixer)
    ids = torch.randint(1, 50, (2, 13))
    with torch.no_grad():
        base = m(ids).logits
        later = ids.clone()
        later[:, 8:] = torch.randint(1, 50, (2, 5))
        torch.testing.assert_close(m(later).logits[:, :8], base[:, :8], **TOL)  # the past never sees the future
    labels = torch.full_like(ids, -100)
    labels[:, [3, 7, 12]] = ids[:, [3, 7, 12]]
    batch = {"input_ids": ids, "labels": labels}
    torch.testing.assert_close(labelled_positions_loss(m, batch), m(ids, labels=labels).loss, **TOL)
    manual = F.cross_entropy(base[:, :-1].reshape(-1, 50), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(m(ids, labels=labels).loss, manual, **TOL)


def test_save_load_round_trip(tmp_path):
    m = harness("gsa", num_slots=3, gate_logit_normalizer=16.0)
    m.save_pretrained(tmp_path)
    back = ZoologyForCausalLM.from_pretrained(tmp_path).double().eval()
    assert back.config.mixer == "gsa" and back.config.gate_logit_normalizer == 16.0
    ids = torch.randint(1, 50, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, m(ids).logits, rtol=0, atol=0)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="mixer"):
        ZoologyConfig(mixer="mamba")
    with pytest.raises(ValueError, match="num_slot"):
        ZoologyConfig(num_slot=32)  # misspelt
    with pytest.raises(ValueError, match="even"):
        ZoologyConfig(num_hidden_layers=3)
    with pytest.raises(ValueError, match="divisible"):
        ZoologyConfig(hidden_size=30, num_heads=4)
    m = harness()
    ids = torch.randint(1, 50, (2, 5))
    with pytest.raises(ValueError, match="position_ids"):
        m(ids, position_ids=torch.arange(5)[None])
    with pytest.raises(ValueError, match="labels"):
        m(ids, labels=ids[:, :3])
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        m(ids[0])


@pytest.mark.parametrize("field, value, message", [
    ("layer_norm_eps", 0.0, "must be a positive finite number, got 0.0"),  # LayerNorm of a constant row: 0 / 0
    ("layer_norm_eps", float("nan"), "must be a positive finite number, got nan"),
    ("initializer_range", -0.02, "must be a positive finite number, got -0.02"),
    ("tie_word_embeddings", "no", "must be a bool, got 'no'"),  # a truthy string would tie the head
])
def test_every_field_is_checked_by_name(field, value, message):
    """As GSAConfig's: a bad value of any field raises naming ZoologyConfig.<field>, before a model is built."""
    with pytest.raises(ValueError) as error:
        ZoologyConfig(**{field: value})
    assert str(error.value) == f"ZoologyConfig.{field} {message}"


@pytest.mark.slow
def test_config_file_builds_and_trains(tmp_path, capsys):
    """configs/mqar-zoology-d128.toml: the trainer builds the harness, trains a few steps on MQAR (shrunk to CPU
    size) with a falling loss, evaluates and saves a model that loads back."""
    from gsa.train.loop import Trainer

    cfg = load_config(REPO / "configs" / "mqar-zoology-d128.toml", [
        f"output_dir={str(tmp_path)!r}".replace("'", '"'), "model.hidden_size=32", "model.num_slots=8",
        "model.mixer=\"abc\"", "data.mqar_vocab_size=64", "data.seq_len=64", "data.mqar_train_pairs=[4]",
        "data.mqar_train_seq_lens=[32]", "data.mqar_eval_pairs=[4]", "data.mqar_eval_seq_lens=[]",
        "data.mqar_eval_examples=8", "train.micro_batch_size=16", "train.max_steps=60", "train.compile=false",
        "train.progress=false", "train.log_every=10", "train.eval_every=0", "train.checkpoint_every=0",
        "optim.lr=1e-2", "optim.warmup_steps=5"])
    result = Trainer(cfg).fit()
    rows = [r for r in read_metrics(tmp_path) if "loss" in r]
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.2, rows
    assert set(result["mqar_acc"]) == {"4"}
    back = ZoologyForCausalLM.from_pretrained(tmp_path / "model")
    assert back.config.mixer == "abc"
    # the saved model records its MQAR data, and `gsa eval mqar` tests it in that format and vocabulary by default
    settings = json.loads((tmp_path / "model" / "mqar.json").read_text())
    assert settings == {"vocab_size": 64, "alpha": 0.01, "query_values": False, "random_fill": True}
    args = ["eval", "mqar", "--model", str(tmp_path / "model"), "--seq-len", "64", "--pairs", "4", "8",
            "--num-examples", "16", "--device", "cpu", "--json", str(tmp_path / "acc.json")]
    assert gsa_main(args) == 0
    r = json.loads((tmp_path / "acc.json").read_text())
    assert (r["vocab_size"], r["query_values"], r["random_fill"]) == (64, False, True)
    assert r["accuracy"] == mqar_eval(back, 64, [4, 8], 16, 8, 64, query_values=False, random_fill=True)
    assert gsa_main(args + ["--format", "query-values"]) == 0  # an explicit format wins, with a warning
    r = json.loads((tmp_path / "acc.json").read_text())
    assert (r["query_values"], r["random_fill"]) == (True, False)
    assert "was trained with query_values=False" in capsys.readouterr().err


def test_text_documents_are_refused():
    with pytest.raises(ValueError, match="documents"):
        load_config(REPO / "configs" / "tiny-cpu.toml", ['model={type="zoology"}', "data.documents=true"])


def test_build_model_passes_the_vocabulary():
    m = build_model({"type": "zoology", "hidden_size": 16, "num_slots": 4}, vocab_size=77)
    assert isinstance(m, ZoologyForCausalLM) and m.config.vocab_size == 77


def test_gsa_eval_mqar_scores_a_saved_harness(tmp_path):
    """The Auto classes know the harness, so `gsa eval mqar` loads and scores it like a GSA model."""
    from transformers import AutoModelForCausalLM

    from gsa.eval.mqar import mqar_eval

    harness("attention").save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(model, ZoologyForCausalLM)
    res = tmp_path / "mqar.json"
    assert gsa_main(["eval", "mqar", "--model", str(tmp_path), "--seq-len", "32", "--pairs", "2", "--num-examples",
                     "4", "--vocab-size", "50", "--device", "cpu", "--json", str(res)]) == 0
    assert json.loads(res.read_text())["accuracy"] == mqar_eval(model, 32, [2], 4, 8, vocab_size=50)
