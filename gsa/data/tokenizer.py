"""Tokenizers that need no download, and any Hugging Face tokenizer by path.

``load_tokenizer(spec, ...)`` always returns a ``transformers.PreTrainedTokenizerFast``-compatible object with
an ``eos_token_id``, so a trained model directory can carry its tokenizer (``save_pretrained``) and be reloaded
with ``AutoTokenizer``:

- ``"byte"``: 256 byte tokens plus ``<|endoftext|>`` (id 256); exact for any text, long sequences;
- ``"bpe"``: a byte-level BPE with ``vocab_size`` entries trained with the ``tokenizers`` library on the
  training documents, saved under ``cache_dir`` and reused while the corpus and size are unchanged;
- anything else: a local Hugging Face tokenizer directory (``AutoTokenizer.from_pretrained``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

EOS = "<|endoftext|>"


def _fast(tok_obj):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok_obj, eos_token=EOS, pad_token=EOS)


def byte_tokenizer():
    """256 byte-level tokens (ids 0..255 in byte order) and ``<|endoftext|>`` = 256."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    # ByteLevel maps byte b to a printable character; order the vocabulary by byte value.
    byte_chars = [_bytes_to_unicode()[b] for b in range(256)]
    assert set(byte_chars) == set(alphabet)
    vocab = {c: i for i, c in enumerate(byte_chars)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS])
    return _fast(tok)


def train_bpe(documents: Callable[[], Iterable[str]], vocab_size: int, path: str | os.PathLike):
    """Train a byte-level BPE on ``documents()`` and save it to ``path`` (tokenizer.json), atomically."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 257 + 1:
        raise ValueError(f"bpe vocab_size must be > 257 (256 bytes + {EOS}), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(documents(), trainer=trainer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    tok.save(tmp)
    os.replace(tmp, path)
    return path


def load_tokenizer(
    spec: str,
    *,
    vocab_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    corpus_key: str | None = None,
    documents: Callable[[], Iterable[str]] | None = None,
):
    """Return a tokenizer for ``spec`` ("byte", "bpe" or a local HF tokenizer path).

    For "bpe", ``vocab_size``, ``cache_dir``, ``corpus_key`` (a fingerprint of the training documents) and
    ``documents`` (a callable yielding them, called only when no trained tokenizer is cached) are required.
    """
    if spec == "byte":
        return byte_tokenizer()
    if spec == "bpe":
        if vocab_size is None or cache_dir is None or corpus_key is None or documents is None:
            raise ValueError("the 'bpe' tokenizer needs vocab_size, cache_dir, corpus_key and documents")
        from tokenizers import Tokenizer

        path = Path(cache_dir) / f"bpe-{corpus_key}-{vocab_size}" / "tokenizer.json"
        if not path.exists():
            train_bpe(documents, vocab_size, path)
        return _fast(Tokenizer.from_file(str(path)))
    if not Path(spec).exists():
        raise FileNotFoundError(f"tokenizer {spec!r} is neither 'byte', 'bpe' nor a local tokenizer directory")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec)
    if tok.eos_token_id is None:
        raise ValueError(f"tokenizer {spec!r} has no eos token; documents could not be separated")
    return tok


def tokenizer_fingerprint(tok) -> str:
    """A hash of the tokenizer's vocabulary and special tokens (part of the token cache key)."""
    h = hashlib.sha256()
    h.update(repr(sorted(tok.get_vocab().items())).encode())
    h.update(repr((tok.eos_token_id, type(tok).__name__)).encode())
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    return h.hexdigest()[:16]


def token_byte_lengths(tok) -> "list[int]":
    """UTF-8 bytes each token id stands for (0 for special tokens), for bits-per-byte.

    Exact for byte-level tokenizers (every character of a token maps to one byte); for others the length of
    the token decoded alone, which can differ slightly at multi-byte characters and leading spaces.
    """
    inv = {c: b for b, c in _bytes_to_unicode().items()}
    special = set(tok.all_special_ids)
    n = len(tok)
    out = [0] * n
    for i, piece in enumerate(tok.convert_ids_to_tokens(list(range(n)))):
        if i in special or piece is None:
            continue
        if all(c in inv for c in piece):
            out[i] = len(piece)
        else:
            out[i] = len(tok.decode([i]).encode("utf-8"))
    return out


def _bytes_to_unicode() -> dict[int, str]:
    """The GPT-2 byte-to-character table that byte-level BPE uses (printable bytes map to themselves)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table
