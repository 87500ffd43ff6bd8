"""One call from data sources and a tokenizer spec to cached, split, tokenized corpora."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

from .cache import TokenizedCorpus, _is_heldout, build_token_cache, load_token_cache
from .sources import iter_documents, sources_fingerprint
from .tokenizer import load_tokenizer, tokenizer_fingerprint

DEFAULT_CACHE_DIR = os.path.join(".cache", "gsa-data")


@dataclass
class TextData:
    tokenizer: object
    train: TokenizedCorpus
    heldout: TokenizedCorpus
    cache_path: str


def prepare_text_data(
    sources: Sequence[str] | str = ("python-docs",),
    tokenizer: str = "bpe",
    vocab_size: int = 8192,
    cache_dir: str | os.PathLike = DEFAULT_CACHE_DIR,
    heldout_fraction: float = 0.02,
    split_seed: int = 0,
    text_field: str = "text",
    progress: bool = True,
) -> TextData:
    """Read, (train a BPE on the training split if asked,) tokenize, cache and split.

    The BPE is trained only on documents of the training split, so the held-out text is unseen by both the
    tokenizer and the model. ``vocab_size`` is used only by ``tokenizer="bpe"``.
    """
    src_key = sources_fingerprint(sources, text_field)

    def train_docs():
        for i, doc in enumerate(iter_documents(sources, text_field)):
            if not _is_heldout(i, heldout_fraction, split_seed):
                yield doc

    tok = load_tokenizer(
        tokenizer,
        vocab_size=vocab_size,
        cache_dir=cache_dir,
        corpus_key=hashlib.sha256(f"{src_key}|{heldout_fraction}|{split_seed}".encode()).hexdigest()[:16],
        documents=train_docs,
    )
    key = hashlib.sha256(
        f"{src_key}|{tokenizer_fingerprint(tok)}|{heldout_fraction}|{split_seed}".encode()
    ).hexdigest()[:16]
    path = build_token_cache(
        lambda: iter_documents(sources, text_field), tok, cache_dir, key, heldout_fraction, split_seed,
        progress=progress,
    )
    return TextData(tok, load_token_cache(path, "train"), load_token_cache(path, "heldout"), str(path))


def load_text_data(tokens: str | os.PathLike, tokenizer: str) -> TextData:
    """A token cache built earlier (``.../tokens-<key>``, e.g. on another machine) with its tokenizer
    ("byte" or a local Hugging Face tokenizer path), without the source text. The cache's recorded EOS id and
    vocabulary size must match the tokenizer's."""
    import json
    from pathlib import Path

    path = Path(tokens)
    if not (path / "meta.json").exists():
        raise FileNotFoundError(f"data.tokens={str(path)!r} is not a token cache directory (no meta.json)")
    if tokenizer == "bpe":
        raise ValueError("data.tokens needs data.tokenizer = 'byte' or a tokenizer path, not 'bpe' (a BPE is "
                         "trained from the source text, which a prebuilt cache does without)")
    tok = load_tokenizer(tokenizer)
    meta = json.loads((path / "meta.json").read_text())
    if (meta["eos_id"], meta["vocab_size"]) != (tok.eos_token_id, len(tok)):
        raise ValueError(f"token cache {str(path)!r} was built with eos_id={meta['eos_id']}, vocabulary "
                         f"{meta['vocab_size']}; tokenizer {tokenizer!r} has eos_id={tok.eos_token_id}, "
                         f"vocabulary {len(tok)}")
    return TextData(tok, load_token_cache(path, "train"), load_token_cache(path, "heldout"), str(path))
