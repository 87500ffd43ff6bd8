"""MQAR recall accuracy of a causal LM, per number of key-value pairs (format: ``gsa.data.mqar``)."""

from __future__ import annotations

import torch

from gsa.data.mqar import MQAR_ALPHA, MQAR_VOCAB, mqar_accuracy, mqar_batch


@torch.no_grad()
def mqar_eval(
    model,
    seq_len: int = 512,
    pairs: list[int] = (4, 8, 16, 32, 64),
    num_examples: int = 256,
    batch_size: int = 32,
    vocab_size: int = MQAR_VOCAB,
    alpha: float = MQAR_ALPHA,
    seed: int = 0,
    device: torch.device | str = "cpu",
    query_values: bool = True,
    random_fill: bool = False,
) -> dict[str, float]:
    """Accuracy (fraction of queried values predicted exactly) for each pair count, keyed by ``str(pairs)``.

    The test set for pair count ``D`` is ``mqar_batch(num_examples, seq_len, D, seed=[seed, D], query_values=...,
    random_fill=...)`` (the format options as in gsa.data.mqar_batch; evaluate in the format the model trained on).
    """
    model.eval()
    out = {}
    for d in pairs:
        data = mqar_batch(num_examples, seq_len, d, vocab_size, alpha, seed=[seed, d], query_values=query_values,
                          random_fill=random_fill)
        correct = total = 0
        for i in range(0, num_examples, batch_size):
            ids = data["input_ids"][i : i + batch_size].to(device)
            labels = data["labels"][i : i + batch_size].to(device)
            c, t = mqar_accuracy(model(input_ids=ids).logits, labels)
            correct, total = correct + c, total + t
        out[str(d)] = correct / total
    return out
