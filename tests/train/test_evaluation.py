"""The trainer's MQAR evaluation on models whose answers are known: an oracle, its opposite, and one right on the
first example of each test set only."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from gsa.train.batches import MQARBatches
from gsa.train.distributed import Dist
from gsa.train.evaluation import evaluate

VOCAB = 64


class Answers(nn.Module):
    """Logits whose argmax at position t is labels[t + 1] (the answer) where `right` holds, another token elsewhere."""

    def __init__(self, right):
        super().__init__()
        self.right = right  # (input_ids [N, T]) -> bool [N, 1]: which examples to answer correctly

    def forward(self, input_ids, labels):
        target = labels[:, 1:].clamp_min(0)
        answer = torch.where(self.right(input_ids), target, (target + 1) % VOCAB)
        logits = nn.functional.one_hot(answer, VOCAB).float()
        return SimpleNamespace(logits=torch.cat([logits, torch.zeros_like(logits[:, :1])], 1))


@pytest.mark.parametrize("name, right, expected", [
    ("oracle", lambda ids: torch.ones(len(ids), 1, dtype=torch.bool), 1.0),
    ("wrong", lambda ids: torch.zeros(len(ids), 1, dtype=torch.bool), 0.0),
    # the 8 examples of a set are evaluated in batches of 4, so 2 of the 8 (with as many queries each) are right
    ("first of each batch", lambda ids: (torch.arange(len(ids)) == 0)[:, None], 0.25),
])
def test_mqar_accuracy_of_known_answers(name, right, expected):
    sets = MQARBatches(64, [4], [4, 8, 4], 8, VOCAB, 0.1, seed=3, eval_seq_lens=[64, 64, 32])
    cpu = Dist(rank=0, world=1, local_rank=0, device=torch.device("cpu"))
    result = evaluate(Answers(right), sets, "mqar", 0, 4, cpu, bf16=False)
    assert result == {"mqar_acc": {"4": expected, "8": expected, "4@32": expected}, "mqar_acc_mean": expected}
