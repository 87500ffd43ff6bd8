"""Tokenize documents once, cache the result as memory-mapped arrays, and split off a held-out set.

Layout of one cache entry (``<cache_dir>/tokens-<key>/``; the key hashes the sources, the tokenizer and the
split, so a change in any of them builds a new entry):

- ``train.bin`` / ``heldout.bin``: every document's tokens followed by the tokenizer's EOS, concatenated
  (``uint16`` when the vocabulary fits, else ``uint32``);
- ``train.idx.npy`` / ``heldout.idx.npy``: ``int64 [D + 1]`` document start offsets into the ``.bin``;
- ``meta.json``: dtype, counts, and what the entry was built from.

An entry is built in a temporary directory and renamed into place, so an interrupted build leaves nothing
that looks valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class TokenizedCorpus:
    """tokens: ``[N]`` documents + EOS concatenated (memory-mapped); doc_offsets: ``[D + 1]`` starts."""

    tokens: np.ndarray
    doc_offsets: np.ndarray
    eos_id: int

    @property
    def num_documents(self) -> int:
        return len(self.doc_offsets) - 1

    def document(self, i: int) -> np.ndarray:
        """Tokens of document ``i`` including its trailing EOS."""
        return self.tokens[self.doc_offsets[i] : self.doc_offsets[i + 1]]


def _is_heldout(index: int, fraction: float, seed: int) -> bool:
    """Deterministic per-document coin (streaming: needs no document count)."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < fraction


def build_token_cache(
    documents: Callable[[], Iterable[str]],
    tokenizer,
    cache_dir: str | os.PathLike,
    key: str,
    heldout_fraction: float,
    split_seed: int = 0,
    batch_docs: int = 256,
    progress: bool = True,
) -> Path:
    """Tokenize ``documents()`` into ``cache_dir/tokens-<key>`` (reused when it exists); return that path.

    Document ``i`` goes to the held-out split with probability ``heldout_fraction`` (a hash of
    ``split_seed`` and ``i``); when that leaves the held-out split empty and the fraction is positive, the
    last document moves there.
    """
    from tqdm.auto import tqdm

    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    final = Path(cache_dir) / f"tokens-{key}"
    if (final / "meta.json").exists():
        return final
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".tokens-{key}-"))
    eos = tokenizer.eos_token_id
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.uint32
    files = {s: open(tmp / f"{s}.bin", "wb") for s in ("train", "heldout")}
    offsets = {s: [0] for s in files}
    last_train_doc: np.ndarray | None = None
    try:
        bar = tqdm(desc="tokenizing", unit="doc", disable=not progress)
        index = 0

        def flush(batch: list[str]) -> None:
            nonlocal index, last_train_doc
            for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
                arr = np.asarray(ids + [eos], dtype=dtype)
                split = "heldout" if _is_heldout(index, heldout_fraction, split_seed) else "train"
                files[split].write(arr.tobytes())
                offsets[split].append(offsets[split][-1] + len(arr))
                if split == "train":
                    last_train_doc = arr
                index += 1
            bar.update(len(batch))

        batch: list[str] = []
        for doc in documents():
            batch.append(doc)
            if len(batch) == batch_docs:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
        bar.close()
        if heldout_fraction > 0 and len(offsets["heldout"]) == 1:
            if len(offsets["train"]) < 3:
                raise ValueError("too few documents to split off a held-out set (need at least 2)")
            files["heldout"].write(last_train_doc.tobytes())
            offsets["heldout"].append(len(last_train_doc))
            offsets["train"].pop()
            files["train"].truncate(offsets["train"][-1] * np.dtype(dtype).itemsize)
        if len(offsets["train"]) == 1:
            raise ValueError("no training documents: the data sources are empty")
        for s, f in files.items():
            f.close()
            np.save(tmp / f"{s}.idx.npy", np.asarray(offsets[s], dtype=np.int64))
        meta = {
            "dtype": np.dtype(dtype).name,
            "eos_id": int(eos),
            "vocab_size": len(tokenizer),
            "train_tokens": offsets["train"][-1],
            "heldout_tokens": offsets["heldout"][-1],
            "train_documents": len(offsets["train"]) - 1,
            "heldout_documents": len(offsets["heldout"]) - 1,
            "heldout_fraction": heldout_fraction,
            "split_seed": split_seed,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same entry first; theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        for f in files.values():
            f.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_token_cache(path: str | os.PathLike, split: str) -> TokenizedCorpus:
    """Open one split ("train" or "heldout") of a cache entry, memory-mapped read-only."""
    path = Path(path)
    meta = json.loads((path / "meta.json").read_text())
    n = meta[f"{split}_tokens"]
    dtype = np.dtype(meta["dtype"])
    tokens = np.memmap(path / f"{split}.bin", dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype)
    return TokenizedCorpus(tokens, np.load(path / f"{split}.idx.npy"), meta["eos_id"])
