"""data.passkey_fraction: synthetic passkey sequences mixed into the training windows (the T2R recall
probe's format, filler from the training split), deterministic by global position."""

import pytest
import torch

from gsa.data import prepare_text_data
from gsa.data.passkey import QUESTION
from gsa.train import load_config
from gsa.train.batches import TextBatches
from train.helpers import TINY


@pytest.fixture(scope="module")
def data(data_cache):
    d = load_config(TINY).data
    return prepare_text_data(d.sources, d.tokenizer, d.vocab_size, str(data_cache), d.heldout_fraction,
                             progress=False)


def _is_passkey_row(row: torch.Tensor, question: list[int]) -> bool:
    ids, q = row.tolist(), question
    return any(ids[i:i + len(q)] == q for i in range(len(ids) - len(q) + 1))


def test_share_content_and_batching_independence(data):
    question = data.tokenizer(QUESTION, add_special_tokens=False)["input_ids"]
    mix = TextBatches(data, 256, documents=False, seed=3, passkey_fraction=0.25)
    plain = TextBatches(data, 256, documents=False, seed=3)
    rows = torch.cat([mix.train_batch(step, 0, 0, 1, 8, 1)["input_ids"] for step in range(4)])  # 32 rows
    base = torch.cat([plain.train_batch(step, 0, 0, 1, 8, 1)["input_ids"] for step in range(4)])
    marked = [_is_passkey_row(r, question) for r in rows]
    assert sum(marked) == 8  # exactly a quarter
    for r, b, m in zip(rows, base, marked):  # every other row is the plain window at that position
        assert torch.equal(r, b) != m
    # the same global batch with 2 processes x 2 micro-steps of 2 sequences
    split = torch.cat([mix.train_batch(step, micro, rank, 2, 2, 2)["input_ids"]
                       for step in range(4) for micro in range(2) for rank in range(2)])
    assert torch.equal(split, rows)
    # each passkey row holds its key before the question, and the answer is that key
    r = rows[marked.index(True)].tolist()
    text = data.tokenizer.decode(r)
    key = text.split("The pass key is ")[1][:5]
    assert text.rstrip().endswith(key) and key.isdigit()


@pytest.mark.parametrize("documents", [False, True])
def test_answer_mask_marks_the_passkey_answers_only(data, documents):
    """batch["answer"] (for distill.answer_weight): True exactly where the next token is a passkey answer token,
    in input_ids' layout; never on plain windows."""
    mix = TextBatches(data, 256, documents=documents, seed=3, passkey_fraction=0.25)
    batch = mix.train_batch(0, 0, 0, 1, 8, 1)
    ids, answer = batch["input_ids"].reshape(8, 256), batch["answer"]
    assert answer.shape == batch["input_ids"].shape and answer.dtype == torch.bool
    answer = answer.reshape(8, 256)
    question = data.tokenizer(QUESTION, add_special_tokens=False)["input_ids"]
    for row, m in zip(ids, answer):
        if not _is_passkey_row(row, question):
            assert not m.any()
            continue
        text = data.tokenizer.decode(row.tolist())
        key = text.split("The pass key is ")[1][:5]
        nxt = torch.nonzero(m).squeeze(1) + 1  # the answer tokens follow the marked positions
        assert data.tokenizer.decode(row[nxt].tolist()).strip() == key and int(nxt[-1]) == 255
    assert not TextBatches(data, 256, documents=documents, seed=3).train_batch(0, 0, 0, 1, 8, 1).get("answer")


def test_mixed_wording_rows_carry_their_answers(data):
    """data.passkey_wording = "mixed": the same rows are passkey rows, each in a wording of its own, with the answer
    mask on its key."""
    cfg = load_config(TINY, ['data.passkey_wording="mixed"'])
    mix = TextBatches(data, 256, documents=False, seed=3, passkey_fraction=0.25,
                      passkey_wording=cfg.data.passkey_wording)
    plain = TextBatches(data, 256, documents=False, seed=3, passkey_fraction=0.25)
    batch, base = mix.train_batch(0, 0, 0, 1, 8, 1), plain.train_batch(0, 0, 0, 1, 8, 1)
    assert torch.equal(batch["answer"], base["answer"])  # the same rows hold passkeys, with the same keys
    rows = batch["answer"].reshape(8, 256).any(1)
    assert int(rows.sum()) == 2
    ids = batch["input_ids"].reshape(8, 256)
    for row, m in zip(ids[rows], batch["answer"].reshape(8, 256)[rows]):
        nxt = torch.nonzero(m).squeeze(1) + 1
        key = data.tokenizer.decode(row[nxt].tolist()).strip()
        assert key.isdigit() and len(key) == 5 and key in data.tokenizer.decode(row[: int(nxt[0]) - 20].tolist())
    with pytest.raises(ValueError, match="passkey_wording"):
        load_config(TINY, ['data.passkey_wording="code-only"'])


def test_invalid_fraction_is_refused():
    with pytest.raises(ValueError, match="passkey_fraction"):
        load_config(TINY, ["data.passkey_fraction=1.0"])
    with pytest.raises(ValueError, match="passkey_fraction"):
        load_config(TINY, ["data.passkey_fraction=0.1", 'data.kind="mqar"'])


def test_answer_weight_needs_passkey_distillation(tmp_path):
    plain = ["data.documents=false", f'distill.teacher="{tmp_path}"', "distill.answer_weight=1.0"]
    with pytest.raises(ValueError, match="answer_weight"):
        load_config(TINY, plain)  # no passkey rows to weigh
    with pytest.raises(ValueError, match="answer_weight"):
        load_config(TINY, plain[:2] + ["data.passkey_fraction=0.1", "distill.answer_weight=-1.0"])
    load_config(TINY, plain + ["data.passkey_fraction=0.1"])
    load_config(TINY, plain + ["data.passkey_fraction=0.1", 'distill.stage="attention"'])  # stage 1 weighs them too


@pytest.mark.parametrize("documents", [False, True])
def test_passkey_rows_of_varied_length(data, documents):
    """data.passkey_min_length: each passkey row is an example of L tokens (L in [min, seq_len], from (seed,
    position)) at the window's start, then EOS and the plain window's first tokens; the answer mask marks the
    example's answer, which ends at L - 1, so questions come early as well as late."""
    T, lo = 256, 160
    mix = TextBatches(data, T, documents=documents, seed=3, passkey_fraction=0.5, passkey_min_length=lo)
    plain = TextBatches(data, T, documents=documents, seed=3)
    ends = []
    for step in range(4):
        batch, base = mix.train_batch(step, 0, 0, 1, 8, 1), plain.train_batch(step, 0, 0, 1, 8, 1)
        ids, answer = batch["input_ids"].reshape(8, T), batch["answer"].reshape(8, T)
        base_ids = base["input_ids"].reshape(8, T)
        for row, m, b in zip(ids, answer, base_ids):
            if not m.any():
                assert torch.equal(row, b)
                continue
            nxt = torch.nonzero(m).squeeze(1) + 1  # the answer tokens: the example's last
            end = int(nxt[-1]) + 1  # L
            ends.append(end)
            assert lo <= end <= T
            key = data.tokenizer.decode(row[nxt].tolist()).strip()
            assert key.isdigit() and len(key) == 5
            assert f"The pass key is {key}" in data.tokenizer.decode(row[:end].tolist())
            if end < T:  # EOS, then the plain window's start
                assert int(row[end]) == mix.eos
                assert torch.equal(row[end + 1:], b[: T - end - 1])
    assert len(ends) == 16 and min(ends) < T - 32 and len(set(ends)) > 8  # spread over [lo, T]
    # the same rows, keys and wordings as whole-window rows: only the lengths differ
    again = TextBatches(data, T, documents=documents, seed=3, passkey_fraction=0.5, passkey_min_length=lo)
    assert torch.equal(again.train_batch(2, 0, 0, 1, 8, 1)["input_ids"], mix.train_batch(2, 0, 0, 1, 8, 1)["input_ids"])


def test_passkey_min_length_is_checked(data):
    from gsa.data.passkey import shortest_length

    need = shortest_length(data.tokenizer, "mixed", 64)
    with pytest.raises(ValueError, match=rf"data.passkey_min_length = {need - 1} is below {need}"):
        TextBatches(data, 256, documents=False, seed=3, passkey_fraction=0.5, passkey_wording="mixed",
                    passkey_min_length=need - 1)
    TextBatches(data, 256, documents=False, seed=3, passkey_fraction=0.5, passkey_wording="mixed",
                passkey_min_length=need).train_batch(0, 0, 0, 1, 32, 1)  # every example fits at `need`
    with pytest.raises(ValueError, match="passkey_min_length must be <= data.seq_len"):
        load_config(TINY, ["data.passkey_fraction=0.1", "data.passkey_min_length=100000"])
    with pytest.raises(ValueError, match="needs data.passkey_fraction"):
        load_config(TINY, ["data.passkey_min_length=64"])
    with pytest.raises(ValueError, match="passkey_min_length must be >= 0"):
        load_config(TINY, ["data.passkey_fraction=0.1", "data.passkey_min_length=-1"])
