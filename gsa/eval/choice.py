"""Multiple-choice accuracy from a logits function, computed as lm-evaluation-harness scores a causal LM.

For the rows of gsa.eval.tasks (``context``, ``choices``, ``answer``), as lm-eval 0.4's HFLM and its
``multiple_choice`` output type do with ``target_delimiter: ""``: trailing whitespace of the context moves to the
front of the continuation; the continuation's tokens are those of ``tokenizer(context + continuation)`` after the
first ``len(tokenizer(context))`` (the tokenizer's default special tokens); a choice's log-likelihood is the sum of
its tokens' log-probabilities; ``acc`` counts ``argmax(lls) == answer`` and ``acc_norm`` ``argmax(lls / len(choice))``
(characters), ties going to the first choice (numpy's argmax). So models without a Hugging Face wrapper (a logits
function such as the sliding-window baseline) are scored on the same footing as through `gsa eval harness`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-eval splits a pair for a causal LM; ValueError where either is empty
    (lm-eval asserts both: a choice merged into the context's last token would score log-likelihood 0, the best)."""
    if not context:
        raise ValueError("encode_pair needs a non-empty context")
    given = context
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation)["input_ids"]
    ctx = tokenizer(context)["input_ids"]
    if not ctx:
        raise ValueError(f"the context {given!r} encodes to no token (nothing to condition the choice on)")
    if len(whole) <= len(ctx):
        raise ValueError(f"the choice {continuation!r} adds no token after the context ...{context[-40:]!r}: the "
                         "tokenizer merges it into the context's last token")
    return ctx, whole[len(ctx):]


@torch.no_grad()
def choice_loglikelihoods(logits_fn: Callable[[torch.Tensor], torch.Tensor], tokenizer, rows: Sequence[dict],
                          batch_size: int = 8, device: torch.device | str = "cpu") -> list[list[float]]:
    """[row][choice] log-likelihood of each choice after its row's context. logits_fn: ids [B, T] -> [B, T, V];
    sequences of a batch are right-padded with 0 (a causal model's logits at real positions do not see it)."""
    pairs = [encode_pair(tokenizer, r["context"], c) for r in rows for c in r["choices"]]
    lls: list[float] = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        seqs = [ctx + cont for ctx, cont in chunk]
        ids = torch.zeros(len(seqs), max(map(len, seqs)), dtype=torch.long)  # [B, T + 1]: inputs, then targets
        for n, s in enumerate(seqs):
            ids[n, : len(s)] = torch.tensor(s)
        ids = ids.to(device)
        logp = torch.log_softmax(logits_fn(ids[:, :-1]).float(), dim=-1)
        token_lp = logp.gather(-1, ids[:, 1:, None])[..., 0].cpu()  # [B, T]: log p(token t + 1 | tokens <= t)
        for n, (ctx, cont) in enumerate(chunk):
            lls.append(float(token_lp[n, len(ctx) - 1 : len(ctx) - 1 + len(cont)].sum()))
    out, k = [], 0
    for r in rows:
        out.append(lls[k : k + len(r["choices"])])
        k += len(r["choices"])
    return out


def decisions(lls: Sequence[float], choices: Sequence[str]) -> tuple[int, int]:
    """(the choice `acc` picks, the one `acc_norm` picks): argmax of the log-likelihoods and of the log-likelihoods
    per character, the first on ties."""
    lls = np.asarray(lls, dtype=np.float64)
    return int(np.argmax(lls)), int(np.argmax(lls / np.array([float(len(c)) for c in choices])))


def multiple_choice_scores(logits_fn: Callable[[torch.Tensor], torch.Tensor], tokenizer, rows: Sequence[dict],
                           batch_size: int = 8, device: torch.device | str = "cpu") -> dict[str, float]:
    """{"acc", "acc_norm", "examples"} of `rows` (gsa.eval.tasks rows) under `logits_fn` (ids [B, T] -> [B, T, V])."""
    if not rows:
        raise ValueError("multiple_choice_scores needs at least one row")
    acc = acc_norm = 0
    for r, lls in zip(rows, choice_loglikelihoods(logits_fn, tokenizer, rows, batch_size, device)):
        pred, pred_norm = decisions(lls, r["choices"])
        acc += pred == r["answer"]
        acc_norm += pred_norm == r["answer"]
    return {"acc": acc / len(rows), "acc_norm": acc_norm / len(rows), "examples": len(rows)}
