"""The passkey probe: exact lengths, the needle far enough back, and scoring that an oracle passes and a guesser fails."""

import numpy as np
import pytest
import torch

from gsa.data import byte_tokenizer
from gsa.data.passkey import MIXED_INTROS, MIXED_NAMES, MIXED_QUESTIONS, TEMPLATES
from gsa.eval.passkey import passkey_accuracy, passkey_batch, passkey_scores


def test_passkey_batch_layout_and_scoring():
    tok = byte_tokenizer()
    filler = np.frombuffer(("lorem ipsum dolor sit amet " * 200).encode(), dtype=np.uint8).astype(np.int64)
    b = passkey_batch(tok, filler, 600, 6, seed=1, min_distance=150)
    ids, ans = b["input_ids"], b["answer"]
    assert ids.shape == ans.shape == (6, 600)
    for row, m in zip(ids, ans):
        text = bytes(row.tolist()).decode()
        key = text[-5:]
        assert key.isdigit() and f"The pass key is {key}." in text
        assert len(text) - text.index(f"{key} is the pass key") >= 150
        assert int(m.sum()) == len(" " + key) and m[-(len(key) + 2) : -1].all()

    def oracle(x):  # predicts every next token
        out = torch.full((*x.shape, 256), -1.0)
        out[:, :-1].scatter_(-1, x[:, 1:, None], 1.0)
        return out

    def wrong_last_digit(x):
        out = oracle(x)
        out[:, -2] = 0
        out[:, -2, ord("x")] = 1
        return out

    assert passkey_accuracy(oracle, b, batch_size=4) == 1.0
    assert passkey_accuracy(wrong_last_digit, b, batch_size=4) == 0.0
    # the graded score: every answer token but the last is right (a space and five digits: 5 of 6)
    assert passkey_scores(oracle, b, batch_size=4) == {"exact": 1.0, "token": 1.0}
    assert passkey_scores(wrong_last_digit, b, batch_size=4) == {"exact": 0.0, "token": pytest.approx(5 / 6)}
    assert not torch.equal(passkey_batch(tok, filler, 600, 6, seed=2)["input_ids"], ids)
    with pytest.raises(ValueError, match="min_distance"):
        passkey_batch(tok, filler, 200, 1, min_distance=150)


def test_decoy_control_changes_only_the_needles_key():
    """The control: same filler, positions and asked-for keys; the needle states another key, so a model that
    copies the needle's key (perfect recall) scores 0 there and 1 on the real probe."""
    tok = byte_tokenizer()
    filler = np.frombuffer(("lorem ipsum dolor sit amet " * 200).encode(), dtype=np.uint8).astype(np.int64)
    real = passkey_batch(tok, filler, 600, 8, seed=[7, 600], min_distance=150)
    ctl = passkey_batch(tok, filler, 600, 8, seed=[7, 600], min_distance=150, decoy=True)
    assert torch.equal(real["answer"], ctl["answer"])
    for r, c in zip(real["input_ids"], ctl["input_ids"]):
        rt, ct = bytes(r.tolist()).decode(), bytes(c.tolist()).decode()
        assert rt[-5:] == ct[-5:]  # the same key is asked for
        shown = ct[ct.index("The pass key is ") + 16 :][:5]
        assert shown.isdigit() and shown != ct[-5:] and f"{shown} is the pass key" in ct
        assert rt.replace(rt[-5:], shown)[:-5] == ct[:-5]  # nothing else differs

    def copies_the_needle(x):  # perfect recall: answers with the key the needle states
        out = torch.full((*x.shape, 256), -1.0)
        for n, row in enumerate(x):
            text = bytes(row.tolist()).decode()
            shown = " " + text[text.index("The pass key is ") + 16 :][:5]
            start = len(text) - len(shown) - 1
            for i, ch in enumerate(shown):
                out[n, start + i, ord(ch)] = 1.0
        return out

    assert passkey_scores(copies_the_needle, real, batch_size=4)["exact"] == 1.0
    scores = passkey_scores(copies_the_needle, ctl, batch_size=4)
    assert scores["exact"] == 0.0 and scores["token"] < 1.0


def test_needle_distance_window():
    """min_distance / max_distance bound the tokens from the needle's end to the answer (question included)."""
    tok = byte_tokenizer()
    filler = np.frombuffer(("lorem ipsum dolor sit amet " * 200).encode(), dtype=np.uint8).astype(np.int64)
    seen = []
    for lo, hi in ((80, 96), (200, 200), (300, None)):
        b = passkey_batch(tok, filler, 700, 12, seed=4, min_distance=lo, max_distance=hi)
        for row in b["input_ids"]:
            text = bytes(row.tolist()).decode()
            key = text[-5:]
            end = text.index(f"{key} is the pass key.\n") + len(f"{key} is the pass key.\n")
            d = len(text) - len(" " + key) - end
            assert lo <= d <= (hi if hi is not None else 700), (lo, hi, d)
            seen.append(d)
    assert len(set(seen[:12])) > 3  # spread inside the window, not pinned to one end
    with pytest.raises(ValueError, match="max_distance"):
        passkey_batch(tok, filler, 700, 1, min_distance=100, max_distance=90)


def test_mixed_wording_varies_per_example_and_leaves_the_code_wording_out():
    """template="mixed": each example names its number, asks for it and introduces the text in a wording of its own,
    the answer is the key its needle states (the decoy: another), keys and positions are the default wording's of the
    same seed, and nothing of the "code" wording (held out for testing) appears."""
    tok = byte_tokenizer()
    filler = np.frombuffer(("lorem ipsum dolor sit amet " * 200).encode(), dtype=np.uint8).astype(np.int64)
    b = passkey_batch(tok, filler, 600, 40, seed=5, min_distance=150, template="mixed")
    again = passkey_batch(tok, filler, 600, 40, seed=5, min_distance=150, template="mixed")
    assert torch.equal(b["input_ids"], again["input_ids"])
    plain = passkey_batch(tok, filler, 600, 40, seed=5, min_distance=150)
    code_phrases = [p.strip() for p in TEMPLATES["code"][:3]] + ["secret", "code"]
    names, questions, intros = set(), set(), set()
    for row, m, p in zip(b["input_ids"], b["answer"], plain["input_ids"]):
        text = bytes(row.tolist()).decode()
        key = text[-5:]
        assert key.isdigit() and key == bytes(p.tolist()).decode()[-5:]  # the same keys as the default wording
        assert int(m.sum()) == len(" " + key) and m[-(len(key) + 2) : -1].all()
        name = next(n for n in MIXED_NAMES if f"{n} is {key}" in text or f"({n}: {key})" in text)
        names.add(name)
        questions.update(q for q in MIXED_QUESTIONS if q.format(name=name) in text)
        intros.update(i for i in MIXED_INTROS if i and text.startswith(i))
        assert not any(c in text for c in code_phrases), text
    assert len(names) >= 4 and len(questions) >= 3 and len(intros) >= 3
    ctl = passkey_batch(tok, filler, 600, 40, seed=5, min_distance=150, template="mixed", decoy=True)
    for r, c in zip(b["input_ids"], ctl["input_ids"]):
        rt, ct = bytes(r.tolist()).decode(), bytes(c.tolist()).decode()
        assert rt[-5:] == ct[-5:] and rt[-5:] not in ct[:-5]  # asked for the same key, never shown it
    with pytest.raises(ValueError, match="template must be one of"):
        passkey_batch(tok, filler, 600, 1, template="Mixed")
