"""The passkey probe: exact lengths, the needle far enough back, and scoring that an oracle passes and a guesser fails."""

import numpy as np
import pytest
import torch

from gsa.data import byte_tokenizer
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
