"""fla's GSA checkpoints -> ours -> fla's, with the same function (gsa.convert.fla, gsa.convert.fla_config).

The reference is fla 0.6.0 itself (fla-core + flash-linear-attention, installed with --no-deps by `make setup-dev`):
random fla models saved with save_pretrained, converted, and run side by side. On a CPU fla's Triton kernels run
under the interpreter (tests/conftest.py sets TRITON_INTERPRET); at T <= 64 fla's layer uses its fused recurrent
kernel, the one that runs there (its chunk kernels do not run under the interpreter), so the CPU tests stay at
T <= 64 and the T = 2048 comparison with fla's chunk kernels is the GPU test at the end.

"Equal" for logits means: the two float32 models run different kernels, which round differently, so fla's float32
logits must be as close to the exact function of the converted model (run in float64) as our own float32 logits
are: within 4x our float32 error (seen on a CPU: fla 0.9-2.6e-5, ours 1.1-2.5e-5 at logits up to ~11), the bound
tests/models/test_gpu.py uses for our GPU kernels. Weights and configs, and a round trip back to fla's format,
are compared bitwise.
"""

import copy
import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from gsa.convert import UnsupportedModelError, convert_fla, from_fla, to_fla
from gsa.convert.fla_config import fla_config_from, gsa_config_from_fla
from gsa.models import GSAConfig, GSAForCausalLM, StaticDecoder

ROOT = Path(__file__).resolve().parents[2]
HAS_FLA = importlib.util.find_spec("fla") is not None
needs_fla = pytest.mark.skipif(not HAS_FLA, reason="fla is not installed: `pip install --no-deps fla-core==0.6.0 "
                               "flash-linear-attention==0.6.0` (make setup-dev does)")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

# fla GSAConfig overrides of a tiny model (d = 64, 2 layers, 4 heads, 8 slots); what each one exercises:
CONFIGS = {
    "plain": {},  # swish feature maps, output norm with gain, untied head
    "short-conv": dict(use_short_conv=True, conv_size=3),  # fla's second SiLU after the convolution's
    "grouped-no-gain": dict(num_kv_heads=2, elementwise_affine=False, exapnd_k=0.5),  # GQA, norm without gain
    "relu-conv-tied": dict(feature_map="relu", use_short_conv=True, tie_word_embeddings=True),
}
TINY = dict(hidden_size=64, num_hidden_layers=2, num_heads=4, num_slots=8, vocab_size=100, hidden_ratio=2,
            eos_token_id=None)


@pytest.fixture(autouse=True)
def _first_autotune_config(monkeypatch):
    """Every autotuning candidate computes the same function, so fla's kernels take their first: under the
    interpreter there is no device to time candidates on (Triton's autotuner would fail with "0 active drivers"),
    and on a GPU fla's tuning takes minutes a shape (the GPU test ran out of 90 s on an H100 with it)."""
    if importlib.util.find_spec("triton") is not None:
        import triton.runtime.autotuner as autotuner

        monkeypatch.setattr(autotuner.Autotuner, "prune_configs", lambda self, kwargs: self.configs[:1])


def fla_model(**overrides):
    """A random fla GSAForCausalLM (float32, eval) with weights wider than fla's init, so every weight shows in
    the logits, and small values (v_proj std 0.01) so the output norm's epsilon does too."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fla warns that Triton has no device here
        from fla.models.gsa import GSAConfig as FlaConfig, GSAForCausalLM as FlaForCausalLM

    torch.manual_seed(0)
    model = FlaForCausalLM(FlaConfig(**{**TINY, **overrides})).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.01 if "v_proj" in name else 0.3)
            if "norm" in name:
                p.add_(1.0)
    return model.to(DEVICE)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def fla_dir(request, tmp_path_factory):
    """(name, the directory an fla model was saved to)."""
    path = tmp_path_factory.mktemp(request.param)
    fla_model(**CONFIGS[request.param]).save_pretrained(path)
    return request.param, path


def _load_fla(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fla.models.gsa import GSAForCausalLM as FlaForCausalLM

    return FlaForCausalLM.from_pretrained(path).float().eval().to(DEVICE)


def _ids(T=40, B=2):
    return torch.randint(0, TINY["vocab_size"], (B, T), generator=torch.Generator().manual_seed(1)).to(DEVICE)


def _errors(fla_logits: torch.Tensor, ours: GSAForCausalLM, ids: torch.Tensor) -> tuple[float, float]:
    """(max |fla's logits - truth|, max |our float32 logits - truth|), truth: `ours` in float64."""
    with torch.no_grad():
        truth = copy.deepcopy(ours).double()(ids).logits
        ours32 = ours.float()(ids).logits.double()
    return (fla_logits.double() - truth).abs().max().item(), (ours32 - truth).abs().max().item()


def assert_same_function(fla_logits: torch.Tensor, ours: GSAForCausalLM, ids: torch.Tensor) -> None:
    err_fla, err_ours = _errors(fla_logits, ours, ids)
    assert err_fla <= 4 * err_ours + 1e-6, f"fla is {err_fla:.2e} from the converted model (ours: {err_ours:.2e})"


@needs_fla
def test_converted_logits_equal_fla(fla_dir, tmp_path):
    name, src = fla_dir
    convert_fla(src, tmp_path)
    ours = GSAForCausalLM.from_pretrained(tmp_path).eval().to(DEVICE)
    assert ours.config.model_type == "gated_slot_attention" and ours.config.attn_scale == 1.0
    assert ours.config.feature_map_after_conv == ours.config.use_short_conv
    ids = _ids()
    with torch.no_grad():
        assert_same_function(_load_fla(src)(ids).logits, ours, ids)


@needs_fla
@pytest.mark.parametrize("change", [dict(feature_map_after_conv=False), dict(output_norm_eps=1e-6),
                                    dict(attn_scale=None)])
@pytest.mark.slow
def test_each_fla_option_shows_in_the_logits(change):
    """The options conversion sets are each needed: without any one of them fla is far from the model."""
    fla = fla_model(**CONFIGS["short-conv"])
    ours = from_fla(fla).to(DEVICE)
    wrong = GSAForCausalLM(GSAConfig(**{**ours.config.to_diff_dict(), **change})).eval().to(DEVICE)
    wrong.load_state_dict(ours.state_dict())
    ids = _ids()
    with torch.no_grad():
        want = fla(ids).logits
    err_fla, err_ours = _errors(want, ours, ids)
    assert err_fla <= 4 * err_ours + 1e-6
    assert _errors(want, wrong, ids)[0] > 100 * (4 * err_ours + 1e-6)


@needs_fla
@pytest.mark.parametrize("name", ["plain", "short-conv"])
@pytest.mark.slow
def test_generation_equals_fla(name):
    """Greedy decoding: fla's generate, ours (transformers' generate with our cache) and StaticDecoder."""
    fla = fla_model(**CONFIGS[name])
    ours = from_fla(fla).to(DEVICE)
    prompt = _ids(T=12)
    with torch.no_grad():
        want = fla.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
        got = ours.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
    static = StaticDecoder(ours, batch_size=2).generate(prompt, max_new_tokens=6)
    assert want.shape == (2, 18)
    assert torch.equal(got, want) and torch.equal(static, want)


@needs_fla
def test_round_trip_back_to_fla_is_bitwise(fla_dir, tmp_path):
    name, src = fla_dir
    ours = from_fla(src)
    if ours.config.tie_word_embeddings:
        assert ours.lm_head.weight is ours.model.embed_tokens.weight
    to_fla(ours, tmp_path / "back")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fla.models.gsa import GSAConfig as FlaConfig

    bookkeeping = {"_name_or_path", "transformers_version"}
    configs = [{k: v for k, v in FlaConfig.from_pretrained(p).to_dict().items() if k not in bookkeeping}
               for p in (src, tmp_path / "back")]
    assert configs[0] == configs[1]
    a, b = _load_fla(src).state_dict(), _load_fla(tmp_path / "back").state_dict()  # same config, same weights
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


@needs_fla
def test_bf16_checkpoint_keeps_dtypes_and_casts_on_request(tmp_path):
    fla = fla_model(**CONFIGS["plain"]).to(torch.bfloat16)
    fla.save_pretrained(tmp_path / "fla")
    kept = from_fla(tmp_path / "fla")
    assert {p.dtype for p in kept.parameters()} == {torch.bfloat16}
    named = dict(fla.named_parameters())
    assert torch.equal(kept.model.layers[1].attn.o_norm.weight.cpu(), named["model.layers.1.attn.g_norm.weight"].cpu())
    assert {p.dtype for p in from_fla(tmp_path / "fla", torch.float32).parameters()} == {torch.float32}


@needs_fla
def test_conv_bias_matches_fla_layer():
    """fla's layer has conv_bias (its model never sets it): our layer option against fla's layer directly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fla.layers.gsa import GatedSlotAttention as FlaLayer
    from gsa.nn import GatedSlotAttention

    torch.manual_seed(0)
    theirs = FlaLayer(hidden_size=32, num_heads=2, num_slots=4, use_short_conv=True, conv_size=4, conv_bias=True,
                      layer_idx=0).float().eval()
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0, 0.3)
    ours = GatedSlotAttention(32, num_heads=2, num_slots=4, use_short_conv=True, conv_size=4, conv_bias=True,
                              scale=1.0, feature_map_after_conv=True, norm_eps=1e-5).eval()
    state = {k.replace("_conv1d", "_conv").replace("g_norm", "o_norm"): v.squeeze(1) if "conv1d.weight" in k else v
             for k, v in theirs.state_dict().items()}
    ours.load_state_dict(state)
    x = torch.randn(2, 20, 32, device=DEVICE)
    ours, theirs = ours.to(DEVICE), theirs.to(DEVICE)
    with torch.no_grad():
        truth = copy.deepcopy(ours).double()(x.double())[0]
        err_fla = (theirs(x)[0].double() - truth).abs().max().item()
        err_ours = (ours(x)[0].double() - truth).abs().max().item()
    assert err_fla <= 4 * err_ours + 1e-6, (err_fla, err_ours)


@needs_fla
def test_cli_converts_both_ways(tmp_path, capsys):
    from gsa.cli import main

    src = tmp_path / "fla"
    fla_model(**CONFIGS["short-conv"]).save_pretrained(src)
    (src / "tokenizer_config.json").write_text("{}")
    assert main(["convert", "--from", str(src), "--to", str(tmp_path / "ours")]) == 0
    assert json.loads((tmp_path / "ours/config.json").read_text())["model_type"] == "gated_slot_attention"
    assert (tmp_path / "ours/tokenizer_config.json").exists()
    back = ["convert", "--from", str(tmp_path / "ours"), "--to", str(tmp_path / "back"), "--to-format", "fla"]
    assert main(back) == 0
    assert json.loads((tmp_path / "back/config.json").read_text())["model_type"] == "gsa"
    capsys.readouterr()
    assert main(["convert", "--from", str(src), "--to", str(tmp_path / "x"), "--num-slots", "8"]) == 2
    assert "gsa convert: error: --num-slots set up a T2R conversion" in capsys.readouterr().err
    # not ours: says how to convert it
    assert main(["convert", "--from", str(src), "--to", str(tmp_path / "y"), "--to-format", "fla"]) == 2
    assert "looks like a flash-linear-attention GSA checkpoint" in capsys.readouterr().err


def _fla_dict(**overrides):
    """An fla 0.6.0 config dict as its save_pretrained writes it (defaults), with overrides."""
    base = dict(model_type="gsa", hidden_size=64, num_hidden_layers=2, num_heads=4, num_kv_heads=None,
                num_slots=8, expand_k=1, expand_v=1, gate_logit_normalizer=8, use_short_conv=False, conv_size=4,
                feature_map="swish", elementwise_affine=True, norm_eps=1e-6, hidden_ratio=4, intermediate_size=None,
                hidden_act="swish", vocab_size=100, attn=None, use_norm=True, use_output_gate=False, clamp_min=None,
                clamp_max=None, fuse_norm=True, fuse_swiglu=True, fuse_cross_entropy=True,
                fuse_linear_cross_entropy=False, use_l2warp=False, use_cache=True, max_position_embeddings=2048,
                attnres_block_size=None, tie_word_embeddings=False, initializer_range=0.02, bos_token_id=1,
                eos_token_id=2, pad_token_id=None, transformers_version="5.23.0")
    return {**base, **overrides}


def test_config_mapping_without_fla():
    fla = _fla_dict(num_slots=None, use_short_conv=True)
    fla["exapnd_k"] = fla.pop("expand_k") / 2  # fla's __init__ spelling (its config.json says expand_k)
    c = gsa_config_from_fla(fla)
    assert (c.num_slots, c.head_k_dim, c.expand_k, c.attn_scale, c.output_norm_eps) == (8, 8, 0.5, 1.0, 1e-5)
    assert (c.hidden_act, c.feature_map_after_conv, c.conv_bias, c.output_norm_affine) == ("silu", True, False, True)
    assert (c.intermediate_size, c.hidden_ratio) == (256, 4)
    assert not gsa_config_from_fla(_fla_dict(elementwise_affine=None)).output_norm_affine  # fla: a gain if truthy
    for fla in (_fla_dict(), _fla_dict(num_kv_heads=2, use_short_conv=True, intermediate_size=96,
                                       feature_map="relu", tie_word_embeddings=True)):
        back = fla_config_from(gsa_config_from_fla(fla))
        assert back.pop("architectures") == ["GSAForCausalLM"]
        assert back == {k: v for k, v in fla.items() if k != "transformers_version"}


@pytest.mark.parametrize("field,value,says", [
    ("attn", {"layers": [1], "num_heads": 4}, "interleaved attention"),
    ("feature_map", "t2r", "t2r"),
    ("use_norm", False, "use_norm"),
    ("use_output_gate", True, "use_output_gate"),
    ("attnres_block_size", 2, "attnres_block_size"),
    ("hidden_act", "powlu", "powlu"),
    ("norm_first", True, "norm_first"),
    ("gate_low_rank_dim", 16, "gate_low_rank_dim"),
    ("expand_v", 2, "expand_v"),
    ("gate_logit_normalizer", None, "gate_logit_normalizer"),
])
def test_unreproducible_fla_options_are_refused_by_name(field, value, says):
    with pytest.raises(UnsupportedModelError, match=says):
        gsa_config_from_fla(_fla_dict(**{field: value}))


@pytest.mark.parametrize("change,says", [
    (dict(attn_scale=None), "attn_scale"), (dict(forget_gate="fixed"), "forget_gate"),
    (dict(use_short_conv=True), "feature_map_after_conv"), (dict(output_norm_eps=None), "output_norm_eps"),
    (dict(window_size=4), "window_size"), (dict(feature_map="identity", use_output_norm=False,
                                              output_norm_eps=None), "feature_map"),
])
def test_export_refuses_what_fla_cannot_express(change, says):
    base = gsa_config_from_fla(_fla_dict()).to_diff_dict()
    with pytest.raises(UnsupportedModelError, match=says):
        fla_config_from(GSAConfig(**{**base, **change}))


def test_from_pretrained_on_an_fla_directory_says_how_to_convert(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(_fla_dict()))
    with pytest.raises(ValueError, match="gsa convert --from"):
        GSAForCausalLM.from_pretrained(tmp_path)


_IMPORTS = """
import json, sys, warnings
warnings.simplefilter("ignore")
order, fla_dir, ours_dir, legacy_dir = sys.argv[1:]
for name in order.split(","):
    __import__(name)
from transformers import AutoConfig, AutoModelForCausalLM
import gsa.models
def owner(path):
    return type(AutoModelForCausalLM.from_pretrained(path)).__module__.split(".")[0]
out = {"fla": owner(fla_dir) if "fla" in order else None, "ours": owner(ours_dir),
       "legacy": type(gsa.models.GSAForCausalLM.from_pretrained(legacy_dir)).__module__.split(".")[0]}
if "fla" not in order:
    out["legacy_auto"] = owner(legacy_dir)
    try:
        AutoConfig.from_pretrained(fla_dir)
    except ValueError as e:
        out["fla_without_fla"] = "gsa convert" in str(e)
print(json.dumps(out))
"""


@needs_fla
@pytest.mark.parametrize("order", ["gsa,fla", "fla,gsa", "gsa"])
@pytest.mark.slow
def test_import_order_and_auto_classes(order, tmp_path):
    """Each library's Auto classes resolve its own model type whichever is imported first; a directory of ours
    saved under the earlier model_type "gsa" still loads (with the Auto classes too while fla is not imported)."""
    fla_model(**CONFIGS["plain"]).save_pretrained(tmp_path / "fla")
    ours = from_fla(tmp_path / "fla")
    ours.save_pretrained(tmp_path / "ours")
    ours.save_pretrained(tmp_path / "legacy")
    legacy = json.loads((tmp_path / "legacy/config.json").read_text())
    (tmp_path / "legacy/config.json").write_text(json.dumps({**legacy, "model_type": "gsa"}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    dirs = [str(tmp_path / n) for n in ("fla", "ours", "legacy")]
    run = subprocess.run([sys.executable, "-c", _IMPORTS, order, *dirs], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["ours"] == "gsa" and out["legacy"] == "gsa"
    if "fla" in order:
        assert out["fla"] == "fla"
    else:
        assert out["legacy_auto"] == "gsa" and out["fla_without_fla"] is True


@needs_fla
@pytest.mark.slow
def test_benchmark_script_toy_run(tmp_path):
    """benchmarks/recipes/fla_vs_converted.py (fla's model vs its conversion: decode and a training step) runs
    end to end at a toy size; its figures come from a GPU."""
    script = ROOT / "benchmarks" / "recipes" / "fla_vs_converted.py"
    out = tmp_path / "toy.json"
    args = ["--size", "tiny", "--device", "cpu", "--prefixes", "16", "--batches", "1", "--new-tokens", "2",
            "--seq-lens", "32", "--tokens", "64", "--steps", "1", "--warmup", "0", "--out", str(out)]
    run = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [r["model"] for r in result["decode"]] == ["fla", "gsa-eager"]
    assert [r["model"] for r in result["train"]] == ["fla", "gsa"]
    assert all(r["ms_per_token"] > 0 for r in result["decode"]) and all(r["step_ms"] > 0 for r in result["train"])


@needs_fla
@pytest.mark.gpu
def test_gpu_long_sequence_matches_fla_kernels(monkeypatch):
    """T = 2048 through fla's chunk kernels and ours. Truth: the converted model in float64 on the CPU (torch
    backend); the bar: the same model's torch backend in float32 on the same GPU (no Triton kernel of ours), within
    2x for both. fla's float32 kernels default to TF32 dot products; TRITON_F32_DEFAULT=ieee makes them IEEE float32
    (ours always are). Why not the CPU's float32 error: on the H100 (plain config, docs/log.md, "Kernels") the GPU
    torch backend itself is 1.47e-4 from the truth against the CPU's 2.9e-5 (ours 1.57e-4, fla 1.44e-4), and our
    kernels with correctly rounded exp (libdevice) stay at 1.53e-4: the device's float32 arithmetic sets that floor,
    shared by every path on it."""
    from gsa.nn import backend

    monkeypatch.setenv("TRITON_F32_DEFAULT", "ieee")
    errors = {}
    for name in ("plain", "short-conv"):
        fla = fla_model(**CONFIGS[name])
        ours = from_fla(fla)
        ids = _ids(T=2048, B=1)
        with torch.no_grad():
            truth = ours.double().cpu()(ids.cpu()).logits
            cpu32 = ours.float()(ids.cpu()).logits
            ours.cuda()
            monkeypatch.setattr(backend, "KERNELS", "torch")
            gpu_torch = ours(ids).logits.cpu()
            monkeypatch.setattr(backend, "KERNELS", "triton")
            gpu = ours(ids).logits.cpu()
            monkeypatch.setattr(backend, "KERNELS", "auto")  # the next config's CPU runs take PyTorch again
            theirs = fla(ids).logits.cpu()
        err = {k: (v.double() - truth).abs().max().item() for k, v in (
            ("cpu32", cpu32), ("gpu-torch", gpu_torch), ("ours", gpu), ("fla", theirs))}
        errors[name] = err
        print(f"{name}: max |logit error| vs float64: {err}")
        assert err["ours"] <= 2 * err["gpu-torch"] + 1e-6, (name, err)
        assert err["fla"] <= 2 * err["gpu-torch"] + 1e-6, (name, err)
