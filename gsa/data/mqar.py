"""MQAR: multi-query associative recall (the Zoology setup, Arora et al. 2023), generated on the fly.

Format of one example of length ``T`` with ``D`` key-value pairs and vocabulary ``V`` (default 8192):

```
position:  0   1   2   3  ...  2D-2  2D-1 | 2D ...                                      T-1
input_ids: k1  v1  k2  v2 ...  kD    vD   | 0 0 k3 v3 0 0 ... k1 v1 0 0 ... kD vD 0 0 ...
labels:    -100 everywhere except the value right after each query key:  ...  v3 ...  v1 ...
```

- Keys are ``D`` distinct tokens from ``[1, V/2)``; values are drawn (with replacement) from ``[V/2, V)``;
  ``0`` is the filler token.
- The query region (positions ``2D .. T-1``) has ``(T - 2D) // 2`` even-offset slots; every key is queried
  once, in a slot chosen without replacement with probability proportional to ``(j + 1) ** (alpha - 1)``
  (slot ``j``; ``alpha = 0.01`` by default: a power law favouring short distances to the context end, as in
  Zoology). The query key sits at ``2D + 2j`` and its value follows it at ``2D + 2j + 1``.
- Zoology's own generator leaves the position after a query key as filler (the value is only a label there) and by
  default (``random_non_queries``) replaces every filler ``0`` with a uniform token from ``[0, V)``: here
  ``query_values=False`` and ``random_fill=True``. The defaults (value after each query, filler 0) keep the format
  of the MQAR runs in our own blocks (docs/log.md, "MQAR").
- ``labels`` use Hugging Face semantics (aligned with ``input_ids``, the model shifts them): the model
  must predict ``v_i`` at the position of the query key, so ``model(input_ids, labels=labels).loss`` is the
  MQAR loss, and accuracy is ``argmax logits[:, p] == input_ids[:, p + 1]`` wherever
  ``labels[:, p + 1] != -100``.
- Requires ``T >= 4 D`` (enough slots for all queries) and ``D <= V/2 - 1``.

Generation is vectorised (Gumbel top-k for sampling without replacement) and fully determined by ``seed``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch loads on use: the trainer's config (parsed by `gsa train --help`) reads the constants
    import torch

MQAR_VOCAB = 8192
MQAR_ALPHA = 0.01  # the key-distance power law's exponent (see above)
# Written next to a model trained on MQAR, so that `gsa eval mqar` tests it in the format and vocabulary it learned
# (the formats differ in the inputs after each query key: scored in the other one, a model sees inputs it never saw).
MQAR_SETTINGS_FILE = "mqar.json"


def write_mqar_settings(model_dir: str | Path, vocab_size: int, alpha: float, query_values: bool,
                        random_fill: bool) -> Path:
    """Record the MQAR data a model was trained on in ``model_dir/mqar.json``; returns the file's path."""
    path = Path(model_dir) / MQAR_SETTINGS_FILE
    path.write_text(json.dumps({"vocab_size": int(vocab_size), "alpha": float(alpha),
                                "query_values": bool(query_values), "random_fill": bool(random_fill)}, indent=1))
    return path


def read_mqar_settings(model_dir: str | Path) -> dict | None:
    """The settings ``write_mqar_settings`` recorded in ``model_dir`` (keys vocab_size, alpha, query_values,
    random_fill), or None when the model has none (not trained by gsa on MQAR). A malformed file raises ValueError."""
    path = Path(model_dir) / MQAR_SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        out = {"vocab_size": int(raw["vocab_size"]), "alpha": float(raw["alpha"])}
        for key in ("query_values", "random_fill"):  # bool("false") is True: only JSON booleans are taken
            if not isinstance(raw[key], bool):
                raise TypeError(f"{key} must be true or false, got {raw[key]!r}")
            out[key] = raw[key]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a valid MQAR settings file ({type(e).__name__}: {e})") from None
    return out


def mqar_batch(
    num_examples: int,
    seq_len: int,
    num_pairs: int,
    vocab_size: int = MQAR_VOCAB,
    alpha: float = MQAR_ALPHA,
    seed: int | list[int] = 0,
    query_values: bool = True,
    random_fill: bool = False,
) -> dict[str, torch.Tensor]:
    """Return ``{"input_ids": int64 [N, T], "labels": int64 [N, T]}`` (see the module docstring).

    query_values: the queried value also follows its query key in ``input_ids`` (False: filler there, as Zoology).
    random_fill: filler positions hold uniform tokens from ``[0, vocab_size)`` instead of 0 (Zoology's
    ``random_non_queries``). The draws of the default format are the same with or without these options."""
    N, T, D, V = num_examples, seq_len, num_pairs, vocab_size
    if D < 1 or T < 4 * D:
        raise ValueError(f"MQAR needs 1 <= num_pairs and seq_len >= 4 * num_pairs, got T={T}, D={D}")
    if D > V // 2 - 1:
        raise ValueError(f"num_pairs={D} exceeds the {V // 2 - 1} available keys of vocab_size={V}")
    rng = np.random.default_rng(seed)
    keys = _distinct_keys(rng, N, D, V // 2 - 1) + 1
    values = rng.integers(V // 2, V, size=(N, D))
    slots = (T - 2 * D) // 2
    logp = (alpha - 1.0) * np.log(np.arange(1, slots + 1))
    gumbel = logp[None, :] - np.log(-np.log(rng.random((N, slots))))
    query_slot = np.argpartition(-gumbel, D - 1, axis=1)[:, :D]  # distinct slots, one per key
    ids = np.zeros((N, T), dtype=np.int64)
    ids[:, 0 : 2 * D : 2] = keys
    ids[:, 1 : 2 * D : 2] = values
    pos = 2 * D + 2 * query_slot
    rows = np.arange(N)[:, None]
    ids[rows, pos] = keys
    if query_values:
        ids[rows, pos + 1] = values
    labels = np.full((N, T), -100, dtype=np.int64)
    labels[rows, pos + 1] = values
    if random_fill:
        filler = ids == 0  # keys and values are never 0
        ids[filler] = rng.integers(0, V, size=int(filler.sum()))
    import torch

    return {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}


def _distinct_keys(rng: np.random.Generator, rows: int, count: int, n: int) -> np.ndarray:
    """``[rows, count]`` int64: each row ``count`` distinct integers from ``[0, n)``, uniformly at random (ordered).

    Whole rows are drawn with replacement and redrawn while they hold a repeat: exact rejection sampling of
    distinct tuples, about ``exp(count**2 / 2n)`` draws a row, so it is used while that stays below e. Past that
    (many pairs in a small vocabulary), the ``count`` smallest of ``n`` uniform scores per row: exact as well, but
    it draws and partitions ``rows x n`` numbers (~15 ms for a 256-sequence batch at vocabulary 8192, as much as a
    training step of a small model on a GPU, which is why it is not the common path).
    """
    if count * count > 2 * n:
        return np.argpartition(rng.random((rows, n)), count - 1, axis=1)[:, :count]
    out = rng.integers(0, n, size=(rows, count))
    todo = np.arange(rows)
    while True:
        s = np.sort(out[todo], axis=1)
        todo = todo[(s[:, 1:] == s[:, :-1]).any(axis=1)]
        if todo.size == 0:
            return out
        out[todo] = rng.integers(0, n, size=(todo.size, count))


def mqar_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """(correct, total) over the query positions of an MQAR batch; logits ``[N, T, V]``, labels ``[N, T]``."""
    target = labels[:, 1:]
    mask = target != -100
    pred = logits[:, :-1].argmax(-1)
    return int((pred[mask] == target[mask]).sum()), int(mask.sum())
