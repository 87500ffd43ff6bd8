"""gsa.eval.tasks (offline multiple-choice tasks) and gsa.eval.choice (their lm-eval scoring), CPU, seconds."""

import json
import math

import numpy as np
import pytest
import torch

from gsa.cli import main as gsa_main
from gsa.data import byte_tokenizer
from gsa.eval.choice import choice_loglikelihoods, decisions, encode_pair, multiple_choice_scores
from gsa.eval.tasks import TASKS, build_task, sentence_spans, write_task


def unique_documents(n=12, sentences=14):
    """Documents of sentences whose every word is unique in the corpus ("W3_5_0" ... "w3_5_7."), so any text shared
    by two places of an example can only come from copying. Sentence lengths vary from 5 to 20 words."""
    docs = []
    for d in range(n):
        sents = []
        for s in range(sentences):
            size = 5 + (3 * s + 5 * d) % 16
            sents.append(" ".join([f"W{d}_{s}_0"] + [f"w{d}_{s}_{i}" for i in range(1, size)]) + ".")
        docs.append("\n".join(sents))
    return docs


DOCS = unique_documents()
K = 4


@pytest.fixture(scope="module")
def tokenizer():
    return byte_tokenizer()


def test_sentence_spans_follow_the_rule():
    words = 'He said "Stop." Then (Maybe) it rained e.g. here. x! y? Z ends'.split()
    assert [" ".join(words[a:b]) for a, b in sentence_spans(words)] == [
        'He said "Stop."', "Then (Maybe) it rained e.g. here. x! y?", "Z ends"]


@pytest.mark.parametrize("task", list(TASKS))
def test_build_is_deterministic_and_examples_are_where_they_say(task):
    rows = build_task(task, DOCS, num_examples=24, num_choices=K, context_words=20, continuation_words=6, seed=3)
    assert len(rows) == 24
    assert rows == build_task(task, DOCS, num_examples=24, num_choices=K, context_words=20, continuation_words=6,
                              seed=3)
    assert rows != build_task(task, DOCS, num_examples=24, num_choices=K, context_words=20, continuation_words=6,
                              seed=4)
    assert np.bincount([r["answer"] for r in rows], minlength=K).tolist() == [6] * K  # balanced: chance is 1/K
    words = [d.split() for d in DOCS]
    for r in rows:
        w, start = words[r["doc"]], r["start"]
        assert r["context"] == " ".join(w[start - 20 : start])
        answer = r["choices"][r["answer"]]
        if task == "cloze":
            assert answer == " " + " ".join(w[start : start + 6])
        else:
            end = dict(sentence_spans(w))[start]
            assert answer == " " + " ".join(w[start:end])
        assert len(r["choices"]) == K and len(set(r["choices"])) == K  # distractors differ from it and each other
        context_words = set(r["context"].split())
        for i, c in enumerate(r["choices"]):
            assert c.startswith(" ") and not context_words & set(c.split())  # no choice text in the context
            if i == r["answer"]:
                continue
            source = {int(x.strip(".").split("_")[0][1:]) for x in c.split()}
            assert len(source) == 1 and source != {r["doc"]}  # one other document's text
            n, m = len(answer.split()), len(c.split())
            assert m == n if task == "cloze" else 2 * n <= 3 * m and 2 * m <= 3 * n
    if task == "cloze":  # the passages of one document do not overlap
        spans = sorted((r["doc"], r["start"] - 20, r["start"] + 6) for r in rows)
        assert all(a[0] != b[0] or a[2] <= b[1] for a, b in zip(spans, spans[1:]))


def test_build_returns_what_the_documents_hold_and_refuses_what_they_cannot():
    rows = build_task("cloze", DOCS[:3], num_examples=1000, context_words=20, continuation_words=6)
    words = sum(len(d.split()) // 26 for d in DOCS[:3])  # non-overlapping passages of 26 words
    assert len(rows) == words
    with pytest.raises(ValueError, match="no cloze example can be built from 1 document"):
        build_task("cloze", DOCS[:1], context_words=20)  # no other document for distractors
    with pytest.raises(ValueError, match="no next-sentence example"):
        build_task("next-sentence", DOCS, context_words=10_000)
    with pytest.raises(ValueError, match="num_choices must be >= 2, got 1"):
        build_task("cloze", DOCS, num_choices=1)
    with pytest.raises(ValueError, match="task must be one of"):
        build_task("hellaswag", DOCS)


def test_encode_pair_moves_trailing_space_to_the_continuation(tokenizer):
    ctx, cont = encode_pair(tokenizer, "ab ", "cd")
    assert ctx == tokenizer("ab")["input_ids"] and cont == tokenizer(" cd")["input_ids"]
    with pytest.raises(ValueError, match="non-empty context"):
        encode_pair(tokenizer, "", "x")


class MergingTokenizer:
    """One token a character, except that "a b" is one token: a context ending in "a" and a choice " b" merge at the
    boundary, so the choice adds no token of its own."""

    def __call__(self, text):
        return {"input_ids": [ord(c) for c in text.replace("a b", "\x01")]}


def test_a_choice_without_tokens_of_its_own_is_refused_not_scored_zero():
    """lm-eval asserts that a continuation has tokens (and a context too); a choice merged into the context's last
    token would otherwise get log-likelihood 0, the most likely of all whatever the model says."""
    tok = MergingTokenizer()
    assert encode_pair(tok, "x a", " c") == ([120, 32, 97], [32, 99])
    with pytest.raises(ValueError, match="choice ' b' adds no token after the context"):
        encode_pair(tok, "x a", " b")
    with pytest.raises(ValueError, match="choice ' b' adds no token after the context"):
        multiple_choice_scores(uniform, tok, [{"context": "x a", "choices": [" b", " c"], "answer": 1}])
    with pytest.raises(ValueError, match="context '   ' encodes to no token"):
        encode_pair(tok, "   ", "x")  # its spaces move to the choice, leaving nothing to condition on


def test_decisions_normalise_by_characters_and_break_ties_to_the_first():
    assert decisions([-4.0, -6.0], [" ab", " abcdef"]) == (0, 1)  # per character: -4/3 < -6/7
    assert decisions([-2.0, -2.0, -3.0], [" a", " b", " cc"]) == (0, 0)
    assert decisions([-3.0, -2.0, -2.0], [" aa", " b", " c"]) == (1, 0)  # -1 a character each: the first


def uniform(ids):
    return torch.zeros(*ids.shape, 300)


def oracle(rows, tokenizer):
    """A logits function that knows each example's true text: wherever the input so far is a prefix of some
    context + answer, it puts logit 20 on that text's next token; elsewhere all logits are 0."""
    truths = [sum(encode_pair(tokenizer, r["context"], r["choices"][r["answer"]]), []) for r in rows]

    def fn(ids):
        out = torch.zeros(*ids.shape, 300)
        for n, row in enumerate(ids.tolist()):
            for truth in truths:
                for t in range(min(len(row), len(truth) - 1)):
                    if row[t] != truth[t]:
                        break
                    out[n, t, truth[t + 1]] = 20.0
        return out

    return fn


@pytest.mark.parametrize("task", list(TASKS))
def test_a_model_that_knows_the_text_scores_1_and_a_uniform_one_the_shortest_choice(task, tokenizer):
    rows = build_task(task, DOCS, num_examples=12, context_words=16, continuation_words=5, seed=1)
    assert multiple_choice_scores(oracle(rows, tokenizer), tokenizer, rows, batch_size=5) == {
        "acc": 1.0, "acc_norm": 1.0, "examples": 12}
    # uniform logits: every choice scores -log(300) a token, so acc picks the first of the fewest-token choices
    # (bytes here: one per character)
    lls = choice_loglikelihoods(uniform, tokenizer, rows, batch_size=7)
    expected = 0
    for r, ll in zip(rows, lls):
        sizes = [len(encode_pair(tokenizer, r["context"], c)[1]) for c in r["choices"]]
        assert sizes == [len(c) for c in r["choices"]]
        assert ll == pytest.approx([-s * math.log(300) for s in sizes], rel=1e-6)
        expected += sizes.index(min(sizes)) == r["answer"]
    assert multiple_choice_scores(uniform, tokenizer, rows)["acc"] == expected / 12


def test_write_task_names_the_data_and_the_metrics(tmp_path):
    rows = build_task("next-sentence", DOCS, num_examples=5, context_words=16)
    yaml = write_task("next-sentence", rows, tmp_path / "out")
    assert yaml == tmp_path / "out" / "gsa_next_sentence.yaml"
    text = yaml.read_text()
    assert f'test: "{(tmp_path / "out" / "gsa_next_sentence.jsonl").resolve()}"' in text
    assert "target_delimiter: \"\"" in text and "metric: acc_norm" in text
    assert [json.loads(x) for x in (tmp_path / "out" / "gsa_next_sentence.jsonl").read_text().splitlines()] == rows


@pytest.mark.parametrize("folder", ["with space", "quotes \" and 'single'", "hash #1: colon", "brackets [v2]",
                                    "star*", "emoji \U0001F600 and é", "back\\slash"])
def test_the_yaml_names_exactly_its_own_data_file(tmp_path, folder):
    """The YAML's data file, as lm-eval's loader reads the YAML and as datasets resolves data_files (glob patterns),
    is exactly the JSONL beside it, whatever the folder's name: an astral character (JSON's surrogate-pair escape
    is no YAML escape) or a glob character ('[v2]' matched nothing; 'star*' also matched 'starZZ') did not."""
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install lm-eval)")
    import datasets
    from lm_eval.tasks._yaml_loader import load_yaml

    rows = build_task("cloze", DOCS, num_examples=3, context_words=12, continuation_words=4)
    yaml = write_task("cloze", rows, tmp_path / folder)
    write_task("cloze", build_task("cloze", DOCS, num_examples=5, context_words=12, continuation_words=4),
               tmp_path / (folder + "ZZ"))  # a folder that a glob character of `folder` also matches
    data_files = load_yaml(yaml)["dataset_kwargs"]["data_files"]["test"]
    loaded = datasets.load_dataset("json", data_files={"test": data_files}, cache_dir=str(tmp_path / "hf"))["test"]
    assert [dict(r) for r in loaded] == rows


def test_gsa_eval_tasks_cli(tmp_path, capsys):
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    out = tmp_path / "tasks"
    args = ["eval", "tasks", "--data", str(data), "--out", str(out), "--context-words", "16"]
    assert gsa_main(args + ["--build", "cloze", "next-sentence", "--examples", "7", "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert "gsa_cloze: 7 examples of 4 choices from 12 documents (split all)" in printed
    assert f"--tasks gsa_cloze,gsa_next_sentence --include-path {out}" in printed
    for task, name in TASKS.items():  # what build_task gives on the same documents and settings
        rows = [json.loads(x) for x in (out / f"{name}.jsonl").read_text().splitlines()]
        assert rows == build_task(task, DOCS, 7, 4, 16, 12, seed=2)
    for extra, message in [
        (["--build", "cloze", "--choices", "1"], "--choices must be >= 2, got 1"),
        (["--build", "cloze", "--examples", "0"], "--examples must be >= 1, got 0"),
        (["--build", "cloze", "--context-words", "5000"], "--build cloze on --data"),
        (["--build", "cloze", "--heldout-fraction", "1"], "--heldout-fraction must be in [0, 1), got 1.0"),
    ]:
        assert gsa_main(args + extra) == 2
        assert f"gsa eval tasks: error: {message}" in capsys.readouterr().err
    assert gsa_main(["eval", "tasks", "--build", "cloze", "--data", str(tmp_path / "none.jsonl"), "--out",
                     str(out)]) == 2
    assert "gsa eval tasks: error: --data: data source" in capsys.readouterr().err
    assert gsa_main(["eval", "tasks", "--build", "cloze", "--data", str(data), "--out", str(data)]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gsa_main(args + ["--build", "hellaswag"])


def test_gsa_eval_tasks_prints_a_command_that_runs_as_printed(tmp_path, capsys):
    """The printed `gsa eval harness` line quotes --include-path for the shell (a folder with a space split in two)."""
    import shlex

    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    out = tmp_path / "my tasks"
    assert gsa_main(["eval", "tasks", "--build", "cloze", "--data", str(data), "--out", str(out), "--context-words",
                     "16", "--examples", "2"]) == 0
    command = capsys.readouterr().out.splitlines()[-1].removeprefix("score with: ")
    words = shlex.split(command)
    assert words[words.index("--include-path") + 1] == str(out)


def merging_bpe():
    """A byte-level BPE of 300 tokens trained on DOCS without splitting at spaces, so its merges cross words ("Ġw",
    ". W"): a context's last token and its choice's first often merge, and the choice's tokens are then those of
    encode(context + choice) after len(encode(context)), not encode(choice)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(DOCS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                      show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


@pytest.mark.parametrize("kind", ["bytes", "merging bpe"])
def test_scores_equal_lm_evals_on_the_written_task_files(tmp_path, monkeypatch, kind):
    """The same tiny model through lm-eval (the gsa adapter, the YAML and JSONL written by write_task) and through
    choice_loglikelihoods: equal log-likelihoods per choice, equal acc and acc_norm; with one token a byte and with
    a tokenizer whose merges cross the context/choice boundary."""
    lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install lm-eval)")
    from convert.convert_teachers import tiny_teacher
    from lm_eval.tasks import TaskManager

    from gsa.eval import harness

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = byte_tokenizer() if kind == "bytes" else merging_bpe()
    model = tiny_teacher("llama", vocab_size=300).eval()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    tasks = {t: build_task(t, DOCS, num_examples=8, context_words=12, continuation_words=4, seed=5) for t in TASKS}
    pairs = [(r["context"], c) for rows in tasks.values() for r in rows for c in r["choices"]]
    merged = sum(tokenizer(x + c)["input_ids"][: len(tokenizer(x)["input_ids"])] != tokenizer(x)["input_ids"]
                 for x, c in pairs)
    assert (merged == 0) if kind == "bytes" else (merged >= len(pairs) // 8)  # the boundary case is exercised
    for t, rows in tasks.items():
        write_task(t, rows, tmp_path / "tasks")
    harness.register()
    manager = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False)  # ours alone: fast
    out = lm_eval.simple_evaluate(model="gsa", model_args={"pretrained": str(tmp_path / "model"), "batch_size": 3,
                                                           "device": "cpu"},
                                  tasks=list(TASKS.values()), task_manager=manager, log_samples=True)
    for t, rows in tasks.items():
        ours = choice_loglikelihoods(lambda x: model(x).logits, tokenizer, rows, batch_size=5)
        theirs = {s["doc_id"]: [ll for ll, _ in s["filtered_resps"]] for s in out["samples"][TASKS[t]]}
        assert sorted(theirs) == list(range(len(rows)))
        for i, lls in enumerate(ours):
            assert lls == pytest.approx(theirs[i], rel=1e-5, abs=1e-4)
        scores = multiple_choice_scores(lambda x: model(x).logits, tokenizer, rows)
        assert out["results"][TASKS[t]]["acc,none"] == scores["acc"]
        assert out["results"][TASKS[t]]["acc_norm,none"] == scores["acc_norm"]
