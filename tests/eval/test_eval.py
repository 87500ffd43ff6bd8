import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gsa.cli import main as gsa_main
from gsa.data import mqar_batch
from gsa.eval import mqar_eval, perplexity
from gsa.models import GSAForCausalLM
from gsa.train import load_config, train

from train.helpers import TINY, tiny_overrides


class Uniform(torch.nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


class Oracle(torch.nn.Module):
    """Predicts the true next token (knows it from the input): a perfect MQAR model."""

    def forward(self, input_ids):
        return SimpleNamespace(logits=torch.nn.functional.one_hot(torch.roll(input_ids, -1, 1), 8192).float())


class Lookup(torch.nn.Module):
    """Solves MQAR from the context alone: at each position, the value paired with that token in the leading run of
    (key < V/2, value >= V/2) pairs. Right in every format, unlike Oracle, which copies the next input token."""

    def forward(self, input_ids):
        V = 8192
        logits = torch.zeros(*input_ids.shape, V)
        for n, row in enumerate(input_ids.tolist()):
            pairs, i = {}, 0
            while i + 1 < len(row) and 0 < row[i] < V // 2 <= row[i + 1]:
                pairs.setdefault(row[i], row[i + 1])
                i += 2
            for t, tok in enumerate(row):
                if tok in pairs:
                    logits[n, t, pairs[tok]] = 1.0
        return SimpleNamespace(logits=logits)


def test_perplexity_of_uniform_model_is_vocab_size():
    tokens = np.random.default_rng(0).integers(0, 50, size=1000)
    lengths = [2] * 50
    r = perplexity(Uniform(50), tokens, lengths, seq_len=64, batch_size=3)
    assert r["tokens"] == 1000 - math.ceil(1000 / 64)  # the first token of each window is not scored
    assert r["ppl"] == pytest.approx(50.0) and r["bytes"] == 2 * r["tokens"]
    assert r["bits_per_byte"] == pytest.approx(math.log2(50) / 2)


def test_mqar_eval_oracle_and_uniform():
    assert mqar_eval(Oracle(), seq_len=64, pairs=[4, 16], num_examples=10, batch_size=4) == {"4": 1.0, "16": 1.0}
    acc = mqar_eval(Uniform(8192), seq_len=64, pairs=[4], num_examples=4)
    assert acc["4"] == 0.0  # argmax of all-equal logits is token 0, never a value
    assert mqar_batch(2, 64, 4, seed=[0, 4])["input_ids"].shape == (2, 64)


def test_mqar_eval_in_zoology_format():
    """Without the value after each query key, copying the next input scores ~0 and recall from the context 1."""
    fmt = dict(query_values=False, random_fill=True)
    assert mqar_eval(Oracle(), seq_len=128, pairs=[4, 16], num_examples=10, batch_size=4, **fmt)["16"] < 0.1
    assert mqar_eval(Lookup(), seq_len=128, pairs=[4, 16], num_examples=10, batch_size=4, **fmt) == {"4": 1.0, "16": 1.0}
    assert mqar_eval(Lookup(), seq_len=128, pairs=[16], num_examples=10, batch_size=4) == {"16": 1.0}


@pytest.fixture(scope="module")
def tiny_model(data_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    train(load_config(TINY, tiny_overrides(data_cache, out, **{"train.max_steps": 10})))
    return out / "model"


@pytest.mark.slow
def test_gsa_eval_ppl_and_mqar_cli(tiny_model, tmp_path, capsys):
    res = tmp_path / "ppl.json"
    assert gsa_main(["eval", "ppl", "--model", str(tiny_model), "--seq-len", "128", "--max-tokens", "4000",
                     "--json", str(res)]) == 0
    r = json.loads(res.read_text())
    assert r["tokens"] == 4000 - math.ceil(4000 / 128)
    assert 1 < r["ppl"] < 2048 and r["bits_per_byte"] == pytest.approx(r["loss"] * r["tokens"] / math.log(2) / r["bytes"])
    assert "perplexity" in capsys.readouterr().out
    res = tmp_path / "mqar.json"
    assert gsa_main(["eval", "mqar", "--model", str(tiny_model), "--seq-len", "64", "--pairs", "4", "8",
                     "--num-examples", "8", "--vocab-size", "2048", "--json", str(res)]) == 0
    # the command scores what mqar_eval scores on the saved model, with the settings it was given (seeded test sets)
    model = GSAForCausalLM.from_pretrained(tiny_model).eval()
    assert json.loads(res.read_text())["accuracy"] == mqar_eval(model, 64, [4, 8], 8, 8, vocab_size=2048)
    assert gsa_main(["eval", "mqar", "--model", str(tiny_model), "--seq-len", "64", "--pairs", "4",
                     "--num-examples", "8", "--vocab-size", "2048", "--format", "zoology", "--json", str(res)]) == 0
    assert json.loads(res.read_text())["accuracy"] == mqar_eval(model, 64, [4], 8, 8, vocab_size=2048,
                                                                query_values=False, random_fill=True)
    assert gsa_main(["eval", "mqar", "--model", str(tiny_model), "--seq-len", "64", "--pairs", "4"]) == 2
    assert "gsa eval mqar: error: --vocab-size 8192 exceeds the model's" in capsys.readouterr().err


def test_gsa_eval_ppl_measures_your_own_file_whole(tiny_model, tmp_path, capsys):
    """A file of your own is one document (a .txt) that the trainer's held-out split would drop: measured whole by
    default; the held-out split of it is refused with a pointer to --split all."""
    from transformers import AutoTokenizer

    text = tmp_path / "mine.txt"
    text.write_text("The list type is a mutable sequence; tuples are immutable. " * 30)
    res = tmp_path / "mine.json"
    assert gsa_main(["eval", "ppl", "--model", str(tiny_model), "--data", str(text), "--seq-len", "64",
                     "--json", str(res)]) == 0
    n = len(AutoTokenizer.from_pretrained(tiny_model)(text.read_text())["input_ids"]) + 1  # and EOS
    assert json.loads(res.read_text())["tokens"] == n - math.ceil(n / 64)
    assert "split all" in capsys.readouterr().out
    assert gsa_main(["eval", "ppl", "--model", str(tiny_model), "--data", str(text), "--split", "heldout"]) == 2
    assert "in its held-out split (--split all measures every document)" in capsys.readouterr().err


TASK = """\
task: gsa_local_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


@pytest.mark.slow
def test_lm_eval_adapter_on_local_task(tiny_model, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install lm-eval)")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # " def" is a prefix of the two other choices at a word boundary, so any model gives it the highest
    # log-likelihood (the others add tokens of probability < 1): acc is the share of rows whose answer is " def",
    # 4 / 6 (a tie, scored as lm-eval's first choice, would give 1 / 6, and so would preferring the longest)
    answers = [1, 1, 1, 0, 2, 1]
    rows = [{"question": f"Question {i}: which keyword defines a function in Python?",
             "choices": [" def main", " def", " def main function"], "answer": a} for i, a in enumerate(answers)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "gsa_local_mc.yaml").write_text(TASK.format(data=tmp_path / "data.jsonl"))
    out = tmp_path / "harness.json"
    assert gsa_main(["eval", "harness", "--model", str(tiny_model), "--tasks", "gsa_local_mc", "--include-path",
                     str(tasks), "--device", "cpu", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["gsa_local_mc"]["acc,none"] == 4 / 6
