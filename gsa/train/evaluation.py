"""The trainer's periodic evaluation: held-out loss and perplexity, or MQAR accuracy per eval set."""

from __future__ import annotations

import math
from typing import Any

import torch

from .distributed import Dist
from .model import model_inputs


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches, kind: str, eval_sequences: int, micro_batch_size: int, d: Dist,
             bf16: bool) -> dict[str, Any]:
    """kind "mqar": {"mqar_acc": {eval set: accuracy}, "mqar_acc_mean"}; else {"eval_loss", "eval_ppl"} over
    eval_sequences held-out windows ({} when there are none). Summed over processes; the model is left in
    training mode."""
    model.eval()
    autocast = torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=bf16)
    try:
        if kind == "mqar":
            from gsa.data.mqar import mqar_accuracy

            correct: dict[str, torch.Tensor] = {}
            total: dict[str, torch.Tensor] = {}
            for name, batch in batches.eval_sets(micro_batch_size, d.rank, d.world):
                batch = to_device(batch, d.device)
                with autocast:
                    logits = model(**model_inputs(model, batch)).logits
                c, t = mqar_accuracy(logits, batch["labels"])
                correct[name] = correct.get(name, 0) + torch.tensor(c)
                total[name] = total.get(name, 0) + torch.tensor(t)
            acc = {p: float(d.sum(correct[p].to(d.device)) / d.sum(total[p].to(d.device))) for p in correct}
            return {"mqar_acc": acc, "mqar_acc_mean": sum(acc.values()) / len(acc)}
        nll = torch.zeros((), device=d.device, dtype=torch.float64)
        count = torch.zeros((), device=d.device, dtype=torch.float64)
        for batch in batches.eval_batches(eval_sequences, micro_batch_size, d.rank, d.world):
            batch = to_device(batch, d.device)
            with autocast:
                loss = model(**model_inputs(model, batch)).loss
            n = (batch["labels"][:, 1:] != -100).sum()
            nll += loss.double() * n
            count += n
        nll, count = d.sum(nll), d.sum(count)
        if count == 0:
            return {}
        loss = float(nll / count)
        return {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 50.0))}
    finally:
        model.train()
