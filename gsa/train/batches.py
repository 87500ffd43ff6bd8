"""Deterministic batch sources for the trainer: language-model windows and MQAR examples (`training_data` makes
the configured one).

Both address the data by (step, micro-step, rank): a step's global batch is the same for any number of
processes and gradient-accumulation split, and resuming at step ``s`` needs nothing but ``s``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gsa.data import DataOrder, TextData, Windows, mqar_batch, pack_batch, passkey_batch
from gsa.data.passkey import shortest_length
from gsa.errors import InputError

from .config import Config
from .distributed import Dist


class TextBatches:
    def __init__(self, data: TextData, seq_len: int, documents: bool, seed: int, passkey_fraction: float = 0.0,
                 passkey_wording: str = "passkey", passkey_min_length: int = 0):
        """passkey_fraction: the share of training windows replaced by synthetic passkey sequences (gsa.data.passkey,
        the evaluation's format; filler from the training split, random keys, the key at least min(128, seq_len / 4)
        tokens before the question), drawn from (seed, position) like the windows, so resuming is exact;
        passkey_wording: their wording (gsa.data.passkey.WORDINGS); passkey_min_length: 0, each passkey sequence
        fills its window (the question at its end); else each is L tokens, L uniform in [passkey_min_length,
        seq_len], at the window's start, then EOS and the start of the plain window at that position, so questions
        are also asked early in a sequence, as a probe of L tokens asks them."""
        self.data, self.documents, self.seed = data, documents, seed
        self.eos = data.tokenizer.eos_token_id
        self.train = Windows(data.train, seq_len)
        self.heldout = Windows(data.heldout, seq_len) if len(data.heldout.tokens) >= seq_len else None
        self.order = DataOrder(len(self.train), seed)
        self.passkey_fraction, self.passkey_wording = passkey_fraction, passkey_wording
        self.passkey_distance = min(128, seq_len // 4)
        self.passkey_min_length = passkey_min_length
        if passkey_fraction and passkey_min_length:  # every wording must fit the shortest length drawn (the
            # config refuses one above seq_len)
            need = shortest_length(data.tokenizer, passkey_wording, self.passkey_distance)
            if passkey_min_length < need:
                raise InputError(f"data.passkey_min_length = {passkey_min_length} is below {need}, the fewest tokens "
                                 f"in which every {passkey_wording!r} passkey sequence fits with its key "
                                 f"{self.passkey_distance} tokens before the question")
        if passkey_fraction:  # fail at start, not at the first passkey window
            self._passkey(0)

    def _is_passkey(self, position: int) -> bool:
        # global position p is a passkey row when floor((p + 1) f) > floor(p f): a share f of every run of
        # positions, the same rows whatever the batching
        f = self.passkey_fraction
        return math.floor((position + 1) * f) > math.floor(position * f)

    def _passkey(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids [T], answer [T]): a passkey sequence (then, if shorter than T, EOS and plain text) and the positions
        whose next token is an answer token."""
        T = self.train.seq_len
        L = T
        if self.passkey_min_length:  # a stream of its own: the keys, filler and wordings stay those of length T
            L = int(np.random.default_rng([self.seed, position, 1]).integers(self.passkey_min_length, T + 1))
        batch = passkey_batch(self.data.tokenizer, self.data.train.tokens, L, 1,
                              seed=[self.seed, position], min_distance=self.passkey_distance,
                              template=self.passkey_wording)
        ids, answer = batch["input_ids"][0].numpy(), batch["answer"][0].numpy()
        if L == T:
            return ids, answer
        tail = self.train[self.order[position]][: T - L - 1]
        return (np.concatenate([ids, [self.eos], tail]).astype(np.int64),
                np.concatenate([answer, np.zeros(T - L, dtype=bool)]))

    def train_batch(self, step: int, micro: int, rank: int, world: int, mbs: int, accum: int) -> dict:
        """pack_batch's batch; with passkey_fraction also "answer": bool in the layout of input_ids, True where
        the next token is a passkey answer token (for distill.answer_weight)."""
        start = step * mbs * accum * world + (micro * world + rank) * mbs
        if not self.passkey_fraction:
            return pack_batch([self.train[self.order[p]] for p in range(start, start + mbs)], self.eos,
                              self.documents)
        no_answer = np.zeros(self.train.seq_len, dtype=bool)
        rows = [self._passkey(p) if self._is_passkey(p) else (self.train[self.order[p]], no_answer)
                for p in range(start, start + mbs)]
        batch = pack_batch([ids for ids, _ in rows], self.eos, self.documents)
        batch["answer"] = torch.from_numpy(np.stack([a for _, a in rows])).reshape(batch["input_ids"].shape)
        return batch

    def eval_batches(self, num_sequences: int, mbs: int, rank: int, world: int) -> Iterator[dict]:
        """The first ``num_sequences`` held-out windows (fewer if the split is small; rounded down to a multiple
        of ``world`` so every process runs the same number of forwards), sharded over processes."""
        if self.heldout is None:
            return
        n = min(len(self.heldout), num_sequences) // world * world
        mine = list(range(rank, n, world))
        for i in range(0, len(mine), mbs):
            yield pack_batch([self.heldout[j] for j in mine[i : i + mbs]], self.eos, self.documents)


class MQARBatches:
    def __init__(self, seq_len: int, train_pairs: list[int], eval_pairs: list[int], eval_examples: int,
                 vocab_size: int, alpha: float, seed: int, train_seq_lens: list[int] | None = None,
                 query_values: bool = True, random_fill: bool = False, eval_seq_lens: list[int] | None = None):
        """train_seq_lens / eval_seq_lens: the length for each entry of train_pairs / eval_pairs (empty or None:
        seq_len). query_values, random_fill: the example format (gsa.data.mqar_batch), for training and evaluation
        alike."""
        train_seq_lens = list(train_seq_lens or [seq_len] * len(train_pairs))
        eval_seq_lens = list(eval_seq_lens or [seq_len] * len(eval_pairs))
        for name, lens, pairs in (("train", train_seq_lens, train_pairs), ("eval", eval_seq_lens, eval_pairs)):
            if len(lens) != len(pairs):
                raise InputError(f"data.mqar_{name}_seq_lens has {len(lens)} entries, expected one per "
                                 f"data.mqar_{name}_pairs entry ({len(pairs)})")
        keys = [self.eval_key(p, n, seq_len) for p, n in zip(eval_pairs, eval_seq_lens)]
        if len(set(keys)) != len(keys):
            raise InputError(f"data.mqar_eval_pairs / mqar_eval_seq_lens repeat a test set: {keys}")
        self.seq_len, self.train_pairs, self.eval_pairs = seq_len, train_pairs, eval_pairs
        self.train_seq_lens, self.eval_seq_lens = train_seq_lens, eval_seq_lens
        self.eval_examples, self.vocab_size, self.alpha, self.seed = eval_examples, vocab_size, alpha, seed
        self.format = dict(query_values=query_values, random_fill=random_fill)
        # fail at start, not at step 1000
        for n, pairs in list(zip(train_seq_lens, train_pairs)) + list(zip(eval_seq_lens, eval_pairs)):
            try:
                mqar_batch(1, n, pairs, vocab_size, alpha, seed=0, **self.format)
            except ValueError as e:  # mqar_batch checks its sizes first: the config's pair counts and lengths
                raise InputError(f"data.mqar_*: {e}") from None

    def train_batch(self, step: int, micro: int, rank: int, world: int, mbs: int, accum: int) -> dict:
        i = (step * accum + micro) * world + rank
        j = i % len(self.train_pairs)
        return mqar_batch(mbs, self.train_seq_lens[j], self.train_pairs[j], self.vocab_size, self.alpha,
                          seed=[self.seed, i], **self.format)

    @staticmethod
    def eval_key(pairs: int, length: int, seq_len: int) -> str:
        """A test set's name in the metrics: "64" at seq_len, "64@256" at another length."""
        return str(pairs) if length == seq_len else f"{pairs}@{length}"

    def eval_sets(self, mbs: int, rank: int, world: int) -> Iterator[tuple[str, dict]]:
        """(test set name, batch) over a fixed test set per (pair count, length), seeded apart from training (the
        sets at seq_len keep their seeds whatever other lengths are asked for), sharded."""
        for pairs, length in zip(self.eval_pairs, self.eval_seq_lens):
            seed = [self.seed, 2**31 - 1, pairs] + ([] if length == self.seq_len else [length])
            full = mqar_batch(self.eval_examples, length, pairs, self.vocab_size, self.alpha, seed=seed, **self.format)
            mine = torch.arange(rank, self.eval_examples // world * world, world)
            for i in range(0, len(mine), mbs):
                idx = mine[i : i + mbs]
                yield self.eval_key(pairs, length, self.seq_len), {"input_ids": full["input_ids"][idx],
                                                                   "labels": full["labels"][idx]}


@dataclass
class TrainingData:
    """The configured batches, the tokenizer saved with each checkpoint (None for MQAR), its EOS id and the
    vocabulary size the model needs."""

    batches: TextBatches | MQARBatches
    tokenizer: Any
    eos_id: int | None
    vocab_size: int


def training_data(cfg: Config, d: Dist, log: Callable[[str], None]) -> TrainingData:
    """The batches of cfg.data. Text data is tokenized into its cache by the main process first; the others then
    load that cache."""
    if cfg.data.kind == "mqar":
        dc = cfg.data
        batches = MQARBatches(dc.seq_len, dc.mqar_train_pairs, dc.mqar_eval_pairs, dc.mqar_eval_examples,
                              dc.mqar_vocab_size, dc.mqar_alpha, cfg.seed, dc.mqar_train_seq_lens,
                              dc.mqar_query_values, dc.mqar_random_fill, dc.mqar_eval_seq_lens)
        return TrainingData(batches, None, None, dc.mqar_vocab_size)
    from gsa.data import load_text_data, prepare_text_data

    def prepare():
        if cfg.data.tokens:
            return load_text_data(cfg.data.tokens, cfg.data.tokenizer)
        return prepare_text_data(cfg.data.sources, cfg.data.tokenizer, cfg.data.vocab_size, cfg.data.cache_dir,
                                 cfg.data.heldout_fraction, text_field=cfg.data.text_field,
                                 progress=cfg.train.progress and d.is_main)

    if d.is_main:  # build the cache once; the others then find it
        data = prepare()
    d.barrier()
    if not d.is_main:
        data = prepare()
    batches = TextBatches(data, cfg.data.seq_len, cfg.data.documents, cfg.seed, cfg.data.passkey_fraction,
                          cfg.data.passkey_wording, cfg.data.passkey_min_length)
    vocab_size = len(data.tokenizer)
    log(f"data: {len(data.train.tokens):,} training tokens ({len(batches.train):,} windows of {cfg.data.seq_len}), "
        f"{len(data.heldout.tokens):,} held-out tokens; vocabulary {vocab_size}")
    return TrainingData(batches, data.tokenizer, data.tokenizer.eos_token_id, vocab_size)
