"""The `gsa` command: the subcommand registry and `gsa generate` on a tiny saved model."""

import re
import subprocess
import sys

import pytest
import torch

from gsa.cli import SUBCOMMANDS, Subcommand, build_parser, main, register
from gsa.models import GSAConfig, GSAForCausalLM

VOCAB = 101


@pytest.fixture
def model_dir(tmp_path):
    torch.manual_seed(0)
    config = GSAConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_slots=8, intermediate_size=64,
                       pad_token_id=0, bos_token_id=1, eos_token_id=2)
    GSAForCausalLM(config).save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def _greedy(model_dir, ids, n):
    model = GSAForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.tensor([ids])
    return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                          pad_token_id=0)[0].tolist()


def test_generate_prints_ids_without_a_tokenizer(model_dir, capsys):
    assert main(["generate", "--model", str(model_dir), "--prompt-ids", "5,6,7", "--max-new-tokens", "5"]) == 0
    printed = [int(x) for x in capsys.readouterr().out.strip().split(",")]
    assert printed == _greedy(model_dir, [5, 6, 7], 5)


def test_generate_sampling_is_seeded(model_dir, capsys):
    argv = ["generate", "--model", str(model_dir), "--prompt-ids", "5,6", "--max-new-tokens", "12", "--do-sample",
            "--temperature", "1.5", "--top-k", "80", "--top-p", "0.99"]
    outs = []
    for seed in ("3", "3", "4"):
        main(argv + ["--seed", seed])
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] != outs[2]


def test_generate_prints_text_with_a_tokenizer(model_dir, capsys):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w3"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="w2", pad_token="w0").save_pretrained(model_dir)

    assert main(["generate", "--model", str(model_dir), "--prompt", "w5 w6 w7", "--max-new-tokens", "4"]) == 0
    want = _greedy(model_dir, [5, 6, 7], 4)
    assert capsys.readouterr().out.strip() == " ".join(f"w{i}" for i in want if i not in (0, 2))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--prompt-ids", "1,x"], "comma-separated"),
        (["--prompt-ids", "1,101"], r"\[0, 101\)"),
        (["--prompt-ids", "1", "--top-k", "5"], "--top-k only apply with --do-sample"),
        (["--prompt-ids", "1", "--do-sample", "--top-p", "1.5"], "--top-p"),
        (["--prompt-ids", "1", "--max-new-tokens", "0"], "--max-new-tokens"),
        (["--prompt", "hello"], "no tokenizer"),
    ],
)
def test_generate_errors(model_dir, extra, message, capsys):
    assert main(["generate", "--model", str(model_dir)] + extra) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("gsa generate: error: ") and re.search(message, last), last


def test_prompt_and_prompt_ids_are_exclusive(model_dir):
    with pytest.raises(SystemExit):
        main(["generate", "--model", str(model_dir), "--prompt", "a", "--prompt-ids", "1"])


def test_registry(monkeypatch):
    assert "generate" in SUBCOMMANDS
    monkeypatch.setattr("gsa.cli.SUBCOMMANDS", dict(SUBCOMMANDS))
    seen = []
    register(Subcommand("hello", "say hello", lambda p: p.add_argument("--name-to-greet"),
                        lambda a: seen.append(a.name_to_greet) or 7))
    assert main(["hello", "--name-to-greet", "gsa"]) == 7 and seen == ["gsa"]
    with pytest.raises(ValueError, match="already registered"):
        register(Subcommand("hello", "again", lambda p: None, lambda a: 0))
    assert "hello" in build_parser().format_help()


def test_python_dash_m_gsa_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "gsa", "--help"], capture_output=True, text=True, check=True)
    assert "generate" in out.stdout


HELP_CODE = r"""
import contextlib, io, sys
from gsa.cli import SUBCOMMANDS, main
for argv in [["--help"]] + [[name, "--help"] for name in SUBCOMMANDS] + [["eval", task, "--help"] for task in
                                                                        ("ppl", "mqar")]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main(argv)
print(sorted(m for m in ("torch", "transformers", "triton", "numpy") if m in sys.modules))
"""


def test_help_imports_no_heavy_module():
    """`gsa --help` and every `gsa COMMAND --help` parse without torch, transformers or triton (seconds to load),
    which the commands import when they run."""
    out = subprocess.run([sys.executable, "-c", HELP_CODE], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[-2] in ("[]", "['numpy']"), out.stdout


@pytest.mark.parametrize("prompt", ["5,6,7", "9"])
def test_generate_static_decoder_matches_generate(model_dir, capsys, prompt):
    base = ["generate", "--model", str(model_dir), "--prompt-ids", prompt, "--max-new-tokens", "20"]
    assert main(base) == 0
    plain = capsys.readouterr().out
    assert main(base + ["--static"]) == 0
    assert capsys.readouterr().out == plain


def test_generate_static_decoder_stops_at_eos_like_generate(tmp_path, capsys):
    torch.manual_seed(0)  # the same weights as model_dir's; eos is a token this model does emit greedily
    config = GSAConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_slots=8, intermediate_size=64,
                       pad_token_id=0, bos_token_id=1, eos_token_id=88)
    GSAForCausalLM(config).save_pretrained(tmp_path / "eos")
    base = ["generate", "--model", str(tmp_path / "eos"), "--prompt-ids", "5,6,7", "--max-new-tokens", "20"]
    assert main(base) == 0
    plain = capsys.readouterr().out
    assert plain.strip().endswith(",88") and len(plain.split(",")) < 23  # generate() stopped at eos
    assert main(base + ["--static"]) == 0
    assert capsys.readouterr().out == plain


def test_overrides_may_come_on_both_sides_of_an_option():
    from gsa.train.cli import parse_args

    argv = ["train", "--config", "c.toml", "train.progress=false", "--max-steps", "2", "optim.lr=1e-3", "seed=3"]
    args = parse_args(build_parser(), argv)
    assert args.max_steps == 2 and args.overrides == ["train.progress=false", "optim.lr=1e-3", "seed=3"]
    for stray in (["--max-stepz", "2"], ["--max-steps", "2", "--bogus"]):
        with pytest.raises(SystemExit):
            parse_args(build_parser(), ["train", "--config", "c.toml", "a=1", *stray, "b=2"])
    with pytest.raises(SystemExit):  # a command without overrides takes no stray KEY=VALUE
        parse_args(build_parser(), ["generate", "--model", "m", "--prompt-ids", "1", "a=1"])
