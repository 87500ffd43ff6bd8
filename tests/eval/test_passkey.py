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
