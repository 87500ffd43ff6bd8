"""Every bad argument, config, data file or model directory given to a `gsa` command ends in one line naming the
problem, ``gsa <command>: error: ...``, and exit status 2; never a traceback, never a run on random or garbage
weights. Each case runs through `gsa.cli.main` in this process; a sample of them (one per command and entry point)
also as real `python -m ...` processes, whose whole stderr must be that one line."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bad_inputs import bad_data_files, damaged_models
from gsa.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny-cpu.toml"
CUDA = torch.cuda.is_available()
# a run that gets as far as reading data: byte tokenizer (no BPE to train), caches and output under {tmp}
RUN = f"train --config {TINY} data.tokenizer='\"byte\"' data.cache_dir='\"{{tmp}}/cache\"' --output-dir {{tmp}}/run " \
      "train.progress=false"

# (id, command line, the error line's regex); {models}, {data} and {tmp} are the fixture's folders
CASES = [
    # the command itself (argparse)
    ("no-command", "", r"gsa: error: the following arguments are required: COMMAND"),
    ("unknown-command", "fly", r"gsa: error: argument COMMAND: invalid choice: 'fly'"),
    ("bench-unknown", "bench nope", r"gsa bench: error: argument which: invalid choice: 'nope'"),
    # generate: the model directory
    ("gen-missing-dir", "generate --model {tmp}/nowhere --prompt-ids 1", r"nowhere is not a directory"),
    ("gen-no-config", "generate --model {models}/no_config --prompt-ids 1", r"has no config\.json"),
    ("gen-bad-json-config", "generate --model {models}/bad_json_config --prompt-ids 1", r"is not valid JSON"),
    ("gen-llama", "generate --model {models}/llama_type --prompt-ids 1",
     r"holds a 'llama' model where a 'gated_slot_attention' one is expected: convert it with `gsa convert --from .* --to OUT`"),
    ("gen-fla", "generate --model {models}/fla_config --prompt-ids 1",
     r"fla_config looks like a flash-linear-.*: convert it with `gsa convert"),
    ("gen-no-q-proj", "generate --model {models}/no_q_proj --prompt-ids 1",
     r"missing tensors model\.layers\.1\.attn\.q_proj\.weight"),
    ("gen-no-lm-head", "generate --model {models}/no_lm_head --prompt-ids 1", r"missing tensors lm_head\.weight"),
    ("gen-more-layers", "generate --model {models}/more_layers --prompt-ids 1", r"missing tensors model\.layers\.2\."),
    ("gen-fewer-layers", "generate --model {models}/fewer_layers --prompt-ids 1",
     r"unexpected tensors model\.layers\.1\."),
    ("gen-other-shape", "generate --model {models}/other_slots --prompt-ids 1", r"tensors of another shape"),
    ("gen-nan", "generate --model {models}/nan_weights --prompt-ids 1", r"model\.norm\.weight holds NaN"),
    ("gen-corrupted", "generate --model {models}/corrupted --prompt-ids 1", r"model\.safetensors is corrupted"),
    ("gen-truncated", "generate --model {models}/truncated --prompt-ids 1", r"has \d+ bytes, \d+ when it was saved"),
    # generate: the prompt and the decoding flags
    ("gen-empty-prompt", "generate --model {models}/good --prompt ''", r"--prompt is empty"),
    ("gen-prompt-no-tokenizer", "generate --model {models}/plain --prompt hello",
     r"has no tokenizer; pass --prompt-ids"),
    ("gen-ids-not-ints", "generate --model {models}/good --prompt-ids 1,x", r"comma-separated integers, got '1,x'"),
    ("gen-ids-empty", "generate --model {models}/good --prompt-ids ,", r"at least one token id"),
    ("gen-ids-range", "generate --model {models}/good --prompt-ids 1,257", r"ids in \[0, 257\), got '1,257'"),
    ("gen-both-prompts", "generate --model {models}/good --prompt a --prompt-ids 1", r"not allowed with argument"),
    ("gen-no-model", "generate --prompt-ids 1", r"the following arguments are required: --model"),
    ("gen-tokens-zero", "generate --model {models}/good --prompt-ids 1 --max-new-tokens 0", r"--max-new-tokens must"),
    ("gen-tokens-text", "generate --model {models}/good --prompt-ids 1 --max-new-tokens many",
     r"argument --max-new-tokens: invalid int value: 'many'"),
    ("gen-temperature-zero", "generate --model {models}/good --prompt-ids 1 --do-sample --temperature 0",
     r"--temperature must be a finite number > 0, got 0\.0"),
    ("gen-temperature-nan", "generate --model {models}/good --prompt-ids 1 --do-sample --temperature nan",
     r"--temperature must be a finite number > 0, got nan"),
    ("gen-top-p", "generate --model {models}/good --prompt-ids 1 --do-sample --top-p 1.5", r"--top-p must be in"),
    ("gen-top-k", "generate --model {models}/good --prompt-ids 1 --do-sample --top-k 0", r"--top-k must be >= 1"),
    ("gen-top-k-greedy", "generate --model {models}/good --prompt-ids 1 --top-k 5",
     r"--top-k only apply with --do-sample"),
    ("gen-device-cuda", "generate --model {models}/good --prompt-ids 1 --device cuda", r"no CUDA device"),
    ("gen-device-junk", "generate --model {models}/good --prompt-ids 1 --device tpu0", r"'tpu0' is not a device"),
    # eval ppl
    ("ppl-missing-dir", "eval ppl --model {tmp}/nowhere", r"nowhere is not a directory"),
    ("ppl-no-q-proj", "eval ppl --model {models}/no_q_proj", r"missing tensors model\.layers\.1\.attn\.q_proj"),
    ("ppl-nan", "eval ppl --model {models}/nan_weights", r"holds NaN"),
    ("ppl-no-tokenizer", "eval ppl --model {models}/plain --data {data}/one_doc.txt", r"no tokenizer in .*plain"),
    ("ppl-bad-tokenizer", "eval ppl --model {models}/good --tokenizer {tmp}/nowhere",
     r"--tokenizer .*nowhere is not a directory"),
    ("ppl-missing-data", "eval ppl --model {models}/good --data {tmp}/nowhere.txt",
     r"--data: data source '.*nowhere\.txt' matches no \.txt, \.jsonl or \.parquet file"),
    ("ppl-empty-data", "eval ppl --model {models}/good --data {data}/empty.txt {data}/blank.txt",
     r"hold no text \(every file is empty\)"),
    ("ppl-binary-data", "eval ppl --model {models}/good --data {data}/binary.txt",
     r"binary\.txt: not UTF-8 text \(byte 0x80 at offset 128\)"),
    ("ppl-utf16-data", "eval ppl --model {models}/good --data {data}/utf16.txt", r"utf16\.txt: holds NUL bytes"),
    ("ppl-bad-jsonl", "eval ppl --model {models}/good --data {data}/bad_json.jsonl",
     r"bad_json\.jsonl:2: not valid JSON \(Unterminated string starting at: column 10\)"),
    ("ppl-jsonl-list", "eval ppl --model {models}/good --data {data}/not_object.jsonl",
     r"not_object\.jsonl:1: expected a JSON object, got list"),
    ("ppl-jsonl-no-field", "eval ppl --model {models}/good --data {data}/no_field.jsonl",
     r"no_field\.jsonl:1: no field 'text' \(fields: \['body'\]\)"),
    ("ppl-jsonl-number", "eval ppl --model {models}/good --data {data}/number_field.jsonl",
     r"number_field\.jsonl:1: field 'text' holds int '42', not text"),
    ("ppl-jsonl-binary-line", "eval ppl --model {models}/good --data {data}/binary_line.jsonl",
     r"binary_line\.jsonl:2: not UTF-8 text"),
    ("ppl-heldout-empty", "eval ppl --model {models}/good --data {data}/one_doc.txt --split heldout",
     r"gives 0 token\(s\) in its held-out split \(--split all measures every document\)"),
    ("ppl-seq-len-zero", "eval ppl --model {models}/good --seq-len 0", r"--seq-len must be >= 2, got 0"),
    ("ppl-seq-len-text", "eval ppl --model {models}/good --seq-len long", r"invalid int value: 'long'"),
    ("ppl-batch-zero", "eval ppl --model {models}/good --batch-size 0", r"--batch-size must be >= 1"),
    ("ppl-max-tokens", "eval ppl --model {models}/good --max-tokens 1", r"--max-tokens must be >= 2"),
    ("ppl-fraction", "eval ppl --model {models}/good --heldout-fraction 1.5", r"--heldout-fraction must be in"),
    ("ppl-fraction-nan", "eval ppl --model {models}/good --heldout-fraction nan", r"--heldout-fraction must be in"),
    ("ppl-json-dir", "eval ppl --model {models}/good --json {tmp}/nowhere/r.json", r"nowhere does not exist"),
    ("ppl-device-cuda", "eval ppl --model {models}/good --device cuda", r"no CUDA device"),
    # eval mqar, harness
    ("mqar-pairs-zero", "eval mqar --model {models}/good --pairs 0", r"--pairs must be >= 1, got 0"),
    ("mqar-seq-too-short", "eval mqar --model {models}/good --seq-len 8 --pairs 4",
     r"--pairs 4 with --seq-len 8, vocabulary 8192: MQAR needs .* seq_len >= 4 \* num_pairs"),
    ("mqar-examples-zero", "eval mqar --model {models}/good --num-examples 0", r"--num-examples must be >= 1"),
    ("mqar-vocab-tiny", "eval mqar --model {models}/good --vocab-size 8 --pairs 4",
     r"num_pairs=4 exceeds the 3 available keys"),
    ("mqar-vocab-model", "eval mqar --model {models}/good --pairs 4", r"--vocab-size 8192 exceeds the model's 257"),
    ("mqar-llama-config", "eval mqar --model {models}/llama_type", r"missing tensors .*unexpected tensors"),
    ("harness-missing-dir", "eval harness --model {tmp}/nowhere --tasks x",
     r"nowhere is not a directory|needs lm-evaluation-harness"),
    ("harness-no-tasks", "eval harness --model {models}/good --tasks ,",
     r"--tasks names no task|needs lm-evaluation-harness"),
    ("eval-no-task", "eval", r"gsa eval: error: the following arguments are required: TASK"),
    # train: the config and its keys
    ("train-missing-config", "train --config {tmp}/nowhere.toml", r"config file .*nowhere\.toml not found"),
    ("train-config-dir", "train --config {tmp}", r"is a directory \(pass a \.toml file\)"),
    ("train-malformed-config", "train --config {data}/bad.toml", r"bad\.toml is not valid TOML"),
    ("train-unknown-key", f"train --config {TINY} train.max_step=3", r"unknown config key train\.max_step \(known:"),
    ("train-unknown-section", f"train --config {TINY} trian.x=1", r"unknown config key 'trian'"),
    ("train-not-a-table", f"train --config {TINY} train=3", r"config section \[train\] must be a table, got 3"),
    ("train-not-key-value", f"train --config {TINY} max_steps", r"override 'max_steps' is not of the form key=value"),
    ("train-steps-negative", f"train --config {TINY} --max-steps -1", r"train\.max_steps must be >= 1, got -1"),
    ("train-steps-zero", f"train --config {TINY} --max-steps 0", r"train\.max_steps must be >= 1, got 0"),
    ("train-steps-text", f"train --config {TINY} train.max_steps=abc", r"train\.max_steps: expected int, got 'abc'"),
    ("train-steps-text-flag", f"train --config {TINY} --max-steps abc", r"--max-steps: invalid int value: 'abc'"),
    ("train-lr-inf", f"train --config {TINY} optim.lr=inf", r"optim\.lr: expected a finite number, got inf"),
    ("train-lr-nan", f"train --config {TINY} optim.lr=nan", r"optim\.lr: expected a finite number, got nan"),
    ("train-lr-negative", f"train --config {TINY} optim.lr=-1e-3", r"optim\.lr must be positive, got -0\.001"),
    ("train-eval-every", f"train --config {TINY} train.eval_every=-1", r"train\.eval_every must be >= 0, got -1"),
    ("train-checkpoint-every", f"train --config {TINY} train.checkpoint_every=-1", r"train\.checkpoint_every must"),
    ("train-keep-zero", f"train --config {TINY} train.keep_checkpoints=0", r"train\.keep_checkpoints must be >= 1"),
    ("train-seq-len", f"train --config {TINY} data.seq_len=0", r"data\.seq_len must be >= 2, got 0"),
    ("train-seed", f"train --config {TINY} seed=-1", r"seed must be >= 0, got -1"),
    ("train-betas", f"train --config {TINY} optim.betas=[0.9]", r"optim\.betas must be two numbers in \[0, 1\)"),
    ("train-heldout", f"train --config {TINY} data.heldout_fraction=1.0", r"data\.heldout_fraction must be in"),
    ("train-model-type", f"train --config {TINY} model.type='\"mamba\"'", r"model\.type must be one of"),
    ("train-both-earlier", f"train --config {TINY} --resume --overwrite", r"argument --overwrite: not allowed with"),
    # train: what the config names on this machine
    ("train-missing-source", RUN + " data.sources='[\"{tmp}/nowhere.txt\"]'", r"data\.sources: data source"),
    ("train-missing-tokens", RUN + " data.tokens='\"{tmp}/nowhere\"'", r"data\.tokens = .* not a token cache"),
    ("train-missing-tokenizer", f"train --config {TINY} data.tokenizer='\"{{tmp}}/nowhere\"'",
     r"data\.tokenizer = .* is neither 'bpe', 'byte' nor a tokenizer directory"),
    ("train-pretrained-no-path", RUN + " model='{{type=\"pretrained\"}}'", r"needs path = DIR, got None"),
    ("train-pretrained-llama", RUN + " model='{{type=\"pretrained\", path=\"{models}/llama_type\"}}'",
     r"holds a 'llama' model where a 'gated_slot_attention' one is expected"),
    ("train-earlier-run", f"train --config {TINY} --output-dir {{tmp}}/earlier",
     r"earlier holds an earlier run \(checkpoints up to step_00000002\): pass --resume"),
    ("train-device-cuda", RUN + " train.device='\"cuda\"'", r"train\.device = 'cuda' but no CUDA device"),
    ("train-binary-data", RUN + " data.sources='[\"{data}/binary.txt\"]'", r"binary\.txt: not UTF-8 text"),
    ("train-empty-data", RUN + " data.sources='[\"{data}/empty.txt\"]'", r"hold no text"),
    ("train-bad-jsonl", RUN + " data.sources='[\"{data}/bad_json.jsonl\"]'", r"bad_json\.jsonl:2: not valid JSON"),
    ("train-model-key", RUN + " model.num_slots=-1", r"\[model\] GSAConfig\.num_slots must be a positive int"),
    ("train-model-typo", RUN + " model.hiden_size=8", r"\[model\] GSAConfig got unknown option\(s\) \['hiden_size'\]"),
    ("train-llama-typo", RUN + " model='{{type=\"llama\", hiden_size=8}}'", r"unknown LlamaConfig key\(s\)"),
    ("train-mqar-sizes", RUN + " data.kind='\"mqar\"' data.seq_len=8 data.mqar_train_pairs=[4]",
     r"data\.mqar_\*: MQAR needs 1 <= num_pairs and seq_len >= 4 \* num_pairs"),
    # demo, convert
    ("demo-missing-config", "demo --config {tmp}/nowhere.toml", r"no config at .*nowhere\.toml"),
    ("demo-tokens-zero", "demo --max-new-tokens 0", r"--max-new-tokens must be >= 1"),
    ("demo-empty-prompt", "demo --prompt ''", r"--prompt is empty"),
    ("demo-steps-zero", "demo --max-steps 0", r"train\.max_steps must be >= 1"),
    ("convert-missing-dir", "convert --from {tmp}/nowhere --to {tmp}/out", r"--from .*nowhere is not a directory"),
    ("convert-gsa-model", "convert --from {models}/good --to {tmp}/out",
     r"supports model_type \['llama', 'mistral', 'qwen2'\]"),
    ("convert-no-to", "convert --from {models}/good", r"the following arguments are required: --to"),
]
NEEDS_NO_CUDA = {"gen-device-cuda", "ppl-device-cuda", "train-device-cuda"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    data = bad_data_files(root / "data")
    (root / "data" / "bad.toml").write_text("[train]\nmax_steps = \n")
    (root / "tmp" / "earlier" / "checkpoints" / "step_00000002").mkdir(parents=True)
    return {"models": damaged_models(root / "models")["good"].parent, "data": data["one_doc"].parent,
            "tmp": root / "tmp"}


def _argv(line: str, folders) -> list[str]:
    return shlex.split(line.format(**folders))


def _prog(argv: list[str]) -> str:
    """The program name argparse and gsa.cli.main put before ': error: '."""
    known = {"generate", "eval", "train", "demo", "convert", "bench"}
    if not argv or argv[0] not in known:
        return "gsa"
    if argv[0] == "eval" and len(argv) > 1 and argv[1] in ("ppl", "mqar", "harness"):
        return f"gsa eval {argv[1]}"
    return f"gsa {argv[0]}"


def _check(rc, err: str, prog: str, message: str) -> None:
    assert rc == 2, f"exit status {rc}; stderr:\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err[-3000:]
    assert errors[0].startswith(f"{prog}: error: "), errors[0]
    import re

    assert re.search(message, errors[0]), errors[0]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_status_2(case, folders, capsys, monkeypatch):
    name, line, message = case
    if name in NEEDS_NO_CUDA and CUDA:
        pytest.skip("this machine has a CUDA device")
    monkeypatch.chdir(folders["tmp"])  # `gsa demo` writes under the config's relative output_dir
    argv = _argv(line, folders)
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    _check(rc, capsys.readouterr().err, _prog(argv), message)


# real processes, started together (each spends ~4 s importing torch and transformers): the `gsa` command failing
# before and after loading a model and inside the trainer, and the two `python -m` entry points
PROCESSES = [("gsa", "gen-llama"), ("gsa", "ppl-binary-data"), ("gsa", "train-binary-data"),
             ("gsa.train", "train-lr-inf"), ("gsa.eval", "mqar-pairs-zero")]


@pytest.mark.slow
def test_as_processes(folders):
    from train.helpers import subprocess_env

    cases = {c[0]: c for c in CASES}
    procs = []
    for module, name in PROCESSES:
        _, line, message = cases[name]
        argv = _argv(line, folders)
        if module != "gsa":  # python -m gsa.train / gsa.eval: no subcommand word
            argv = argv[1:]
        procs.append((module, argv, message, subprocess.Popen(
            [sys.executable, "-m", module, *argv], cwd=folders["tmp"], env=subprocess_env(), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
    for module, argv, message, proc in procs:
        _, err = proc.communicate(timeout=600)
        prog = {"gsa": None, "gsa.train": "python -m gsa.train", "gsa.eval": f"python -m gsa.eval {argv[0]}"}[module]
        _check(proc.returncode, err, prog or _prog(argv), message)
        ours = not message.startswith("gsa") and "invalid choice" not in message
        if ours:  # nothing else on stderr but a weight-loading progress bar
            others = [line for line in err.splitlines()
                      if line.strip() and ": error: " not in line and "Loading weights" not in line]
            assert others == [], err
