"""Fixed-length windows over a token stream, packed batches with document boundaries, and data order.

Two batch layouts, both with Hugging Face label semantics (``labels`` aligned with ``input_ids``; the model
shifts them, ``-100`` is ignored):

- ``documents=False``: ``input_ids``/``labels`` ``[B, T]``; documents run into each other across EOS, as in
  GPT-2 style training.
- ``documents=True``: one packed row ``[1, B * T]`` with ``cu_seqlens`` ``[S + 1]`` (int32, FlashAttention
  convention) marking every document piece: a segment ends after each EOS and at every window edge. The
  first token of every segment gets label ``-100`` because the token before it belongs to another
  document. ``position_ids`` ``[1, B * T]`` restart at 0 in each segment (Transformer baselines use them to
  build a block-diagonal mask).
"""

from __future__ import annotations

import numpy as np
import torch

from .cache import TokenizedCorpus


class Windows:
    """Non-overlapping windows of ``seq_len`` tokens over a corpus stream (the tail shorter than a window is
    dropped). ``windows[i]`` is ``int64 [seq_len]``."""

    def __init__(self, corpus: TokenizedCorpus, seq_len: int):
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {seq_len}")
        self.corpus = corpus
        self.seq_len = seq_len
        self.num = len(corpus.tokens) // seq_len
        if self.num == 0:
            raise ValueError(f"{len(corpus.tokens)} tokens are fewer than one window of seq_len={seq_len}")

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < self.num:
            raise IndexError(i)
        return np.asarray(self.corpus.tokens[i * self.seq_len : (i + 1) * self.seq_len], dtype=np.int64)


def pack_batch(windows: list[np.ndarray], eos_id: int, documents: bool) -> dict[str, torch.Tensor]:
    """Turn ``B`` windows of ``T`` tokens into a batch (see the module docstring for the two layouts)."""
    ids = torch.from_numpy(np.stack(windows))  # [B, T]
    if not documents:
        return {"input_ids": ids, "labels": ids.clone()}
    B, T = ids.shape
    flat = ids.reshape(-1)
    is_start = torch.zeros(B * T, dtype=torch.bool)
    is_start[::T] = True
    after_eos = torch.nonzero(flat[:-1] == eos_id).squeeze(1) + 1
    is_start[after_eos] = True
    starts = torch.nonzero(is_start).squeeze(1)
    cu_seqlens = torch.cat([starts, torch.tensor([B * T])]).to(torch.int32)
    labels = flat.clone()
    labels[starts] = -100
    seg_id = torch.cumsum(is_start.long(), 0) - 1
    position_ids = torch.arange(B * T) - starts[seg_id]
    return {
        "input_ids": flat.unsqueeze(0),
        "labels": labels.unsqueeze(0),
        "cu_seqlens": cu_seqlens,
        "position_ids": position_ids.unsqueeze(0),
    }


class DataOrder:
    """Seeded, deterministic order over ``n`` items, epoch after epoch, addressable by global position.

    Position ``p`` is item ``perm_e[p % n]`` with ``e = p // n`` and ``perm_e`` a permutation drawn from
    ``(seed, e)``. The trainer reads positions ``[step * G, (step + 1) * G)`` for a global batch of ``G``, so
    the data position of a run is just its step, and the order is the same for any number of processes.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self._cache: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            if self.shuffle:
                self._cache = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
            else:
                self._cache = {epoch: np.arange(self.n)}
        return self._cache[epoch]

    def __getitem__(self, position: int) -> int:
        return int(self._perm(position // self.n)[position % self.n])
