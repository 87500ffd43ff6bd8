"""Perplexity and bits per byte of a causal LM on text.

The documents are tokenized with the model's tokenizer, each followed by EOS, concatenated, and cut into
non-overlapping windows of ``seq_len`` (the last, shorter window included). Every token of a window but the
first is scored from the tokens before it in that window. Bits per byte divides the total negative
log-likelihood (in bits) by the UTF-8 bytes those scored tokens stand for (``token_byte_lengths``: exact for
byte-level tokenizers), so models with different tokenizers can be compared.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F


def token_stream(documents: Iterable[str], tokenizer, max_tokens: int | None = None) -> np.ndarray:
    """Documents tokenized, each followed by EOS, concatenated (stops early past ``max_tokens``)."""
    out: list[int] = []
    eos = tokenizer.eos_token_id
    for doc in documents:
        out.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        out.append(eos)
        if max_tokens is not None and len(out) >= max_tokens:
            out = out[:max_tokens]
            break
    return np.asarray(out, dtype=np.int64)


@torch.no_grad()
def perplexity(
    model,
    tokens: np.ndarray,
    byte_lengths: list[int] | None = None,
    seq_len: int = 512,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, float]:
    """tokens: ``int [N]``. Returns tokens (scored), loss (nats per token), ppl, and with ``byte_lengths``
    bytes and bits_per_byte."""
    from tqdm.auto import tqdm

    if len(tokens) < 2:
        raise ValueError("need at least 2 tokens to measure perplexity")
    starts = list(range(0, len(tokens) - 1, seq_len))
    lengths = torch.tensor(byte_lengths, dtype=torch.float64) if byte_lengths is not None else None
    nll, count, nbytes = 0.0, 0, 0.0
    model.eval()
    bar = tqdm(total=len(starts), desc="perplexity", unit="window", disable=not progress)
    for i in range(0, len(starts), batch_size):
        windows = [np.asarray(tokens[s : s + seq_len], dtype=np.int64) for s in starts[i : i + batch_size]]
        groups: dict[int, list[np.ndarray]] = {}
        for w in windows:  # the short last window forms its own batch; no padding needed
            groups.setdefault(len(w), []).append(w)
        for ws in groups.values():
            if len(ws[0]) < 2:
                continue
            ids = torch.from_numpy(np.stack(ws)).to(device)
            logits = model(input_ids=ids).logits.float()
            target = ids[:, 1:]
            lp = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum")
            nll += float(lp)
            count += target.numel()
            if lengths is not None:
                nbytes += float(lengths[target.cpu().reshape(-1)].sum())
        bar.update(len(windows))
    bar.close()
    loss = nll / count
    out = {"tokens": count, "loss": loss, "ppl": math.exp(min(loss, 700.0))}
    if lengths is not None:
        out["bytes"] = int(nbytes)
        out["bits_per_byte"] = nll / math.log(2) / nbytes if nbytes else float("nan")
    return out
