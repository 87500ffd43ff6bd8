"""Passkey retrieval scores: the recall probe on gsa.data.passkey's sequences (T2R's in-context recall test).

Scored with teacher forcing: an example counts when the argmax at every answer position is the answer token (all
digits exact). A model's score on the control (`passkey_batch(..., decoy=True)`, the needle stating another key)
is what it gets from the answer's format alone (digits, their frequencies); recall shows as the gap between the
real probe and the control.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gsa.data.passkey import TEMPLATES, passkey_batch

__all__ = ["TEMPLATES", "passkey_accuracy", "passkey_batch", "passkey_scores"]  # the probe's sequences and scores


@torch.no_grad()
def passkey_scores(logits_fn: Callable[[torch.Tensor], torch.Tensor], batch: dict[str, torch.Tensor],
                   batch_size: int = 8, device: torch.device | str = "cpu") -> dict[str, float]:
    """{"exact": the fraction of examples whose answer tokens are all predicted (argmax), "token": the fraction of
    answer tokens predicted}. The token score is graded: a model that cannot see the key scores near digit chance
    (~0.1 a digit token) instead of exactly 0, so partial recall shows before exact recall does.
    logits_fn: ids [B, T] -> logits [B, T, V]."""
    ids, answer = batch["input_ids"], batch["answer"]
    exact, hits, total = 0, 0, 0
    for i in range(0, len(ids), batch_size):
        x = ids[i : i + batch_size].to(device)
        m = answer[i : i + batch_size].to(device)[:, :-1]
        right = logits_fn(x).argmax(-1)[:, :-1] == x[:, 1:]  # [B, T - 1]
        exact += int((right | ~m).all(-1).sum())
        hits += int((right & m).sum())
        total += int(m.sum())
    return {"exact": exact / len(ids), "token": hits / max(total, 1)}


def passkey_accuracy(logits_fn: Callable[[torch.Tensor], torch.Tensor], batch: dict[str, torch.Tensor],
                     batch_size: int = 8, device: torch.device | str = "cpu") -> float:
    """Fraction of examples whose answer tokens are all predicted (argmax); logits_fn: ids [B, T] -> [B, T, V]."""
    return passkey_scores(logits_fn, batch, batch_size, device)["exact"]
