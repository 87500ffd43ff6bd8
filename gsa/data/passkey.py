"""Passkey sequences: synthetic recall examples in natural text, for any tokenizer (T2R's in-context recall probe,
scored by gsa.eval.passkey; the trainer mixes them into its windows with data.passkey_fraction).

One example of `length` tokens:

    <intro> <filler ...> <needle: "The pass key is 48213. Remember it. 48213 is the pass key."> <filler ...>
    <question: "What is the pass key? The pass key is"> <answer: " 48213">

The filler is a token stream (held-out tokens for evaluation, so no model has trained on it); the needle sits at
least `min_distance` tokens before the question, so a model that sees only a short window of recent tokens (the
sliding-window baseline) cannot read it.

The control (`decoy=True`): the same examples, but the needle states another key than the one the answer asks
for, so no recall can help.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch loads on use: the trainer's config (parsed by `gsa train --help`) reads WORDINGS
    import torch

INTRO = "There is an important pass key hidden inside a lot of irrelevant text. Find it and remember it.\n"
NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key.\n"
QUESTION = "\nWhat is the pass key? The pass key is"
ANSWER = " {key}"
# Other wordings of the same probe (intro, needle, question, answer): a model trained on passkey rows of the default
# wording is tested on one it has not seen, so its score measures recall, not a memorised template.
TEMPLATES = {
    "passkey": (INTRO, NEEDLE, QUESTION, ANSWER),
    "code": ("Below is a long document. Somewhere in it is a secret code number.\n",
             " Note: the secret code number is {key}. Keep this code in mind.\n",
             "\nQuestion: which secret code number was given in the document? Answer: the code is",
             " {key}"),
}
# "mixed": a training wording drawn per example from these pools (an intro, a name for the number, a needle and a
# question naming it), so recall is learnt from many phrasings rather than one template. The pools include the
# default wording and nothing of "code"'s (no "secret", "code", "document", "Question:"/"Answer:"), which stays a
# wording never trained on.
MIXED = "mixed"
MIXED_INTROS = (INTRO, "", "The text below hides a number that you will be asked about at the end.\n",
                "Read the following passage closely: one sentence in it gives a number to keep.\n",
                "Somewhere in this long text there is a number worth remembering.\n")
MIXED_NAMES = ("pass key", "magic number", "special number", "access number", "lucky number", "PIN")
MIXED_NEEDLES = (" The {name} is {key}. Remember it. {key} is the {name}.\n", " Remember this: the {name} is {key}.\n",
                 " Write this down: the {name} is {key}.\n", " ({name}: {key})\n", " By the way, my {name} is {key}.\n")
MIXED_QUESTIONS = ("\nWhat is the {name}? The {name} is", "\nRecall the {name} mentioned above. It was",
                   "\nThe {name} mentioned earlier is", "\nTell me the {name} from the text. The {name} is")
WORDINGS = (*TEMPLATES, MIXED)


def _mixed(intro: str, name: str, needle: str, question: str) -> tuple[str, str, str, str]:
    """The (intro, needle, question, answer) of one choice from each "mixed" pool (the needle keeps its {key})."""
    return intro, needle.replace("{name}", name), question.format(name=name), ANSWER


def mixed_wording(rng: np.random.Generator) -> tuple[str, str, str, str]:
    """One (intro, needle, question, answer) of the "mixed" wording, drawn with rng."""
    name = MIXED_NAMES[rng.integers(len(MIXED_NAMES))]
    needle = MIXED_NEEDLES[rng.integers(len(MIXED_NEEDLES))]
    question = MIXED_QUESTIONS[rng.integers(len(MIXED_QUESTIONS))]
    return _mixed(MIXED_INTROS[rng.integers(len(MIXED_INTROS))], name, needle, question)


def wordings(template: str) -> list[tuple[str, str, str, str]]:
    """Every (intro, needle, question, answer) a wording can draw: one for a key of TEMPLATES, each combination of
    the pools for "mixed"."""
    if template != MIXED:
        return [TEMPLATES[template]]
    return [_mixed(intro, name, needle, question) for intro in MIXED_INTROS for name in MIXED_NAMES
            for needle in MIXED_NEEDLES for question in MIXED_QUESTIONS]


def shortest_length(tokenizer, template: str = "passkey", min_distance: int = 128) -> int:
    """The fewest tokens in which every example of `template` fits with its needle `min_distance` tokens before
    the answer (passkey_batch's bound), for 5-digit keys tokenized as 99999 is."""
    def n(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return max(n(intro) + n(needle.format(key=99999)) + n(answer.format(key=99999)) + max(n(question), min_distance)
               for intro, needle, question, answer in wordings(template))


def passkey_batch(tokenizer, filler: np.ndarray, length: int, num_examples: int, seed: int | list[int] = 0,
                  min_distance: int = 128, decoy: bool = False,
                  max_distance: int | None = None, template: str = "passkey") -> dict[str, torch.Tensor]:
    """{"input_ids": int64 [N, length], "answer": bool [N, length]}: answer[n, p] marks positions whose *next*
    token is an answer token (so logits[n, p] must predict input_ids[n, p + 1]).

    filler: a token stream (e.g. held-out text), long enough for `length` tokens from random offsets.
    decoy: the control; the needle holds another key than the answer (the examples are otherwise the same as
    with decoy=False and the same seed: the decoy keys come from a separate random stream).
    min_distance / max_distance: the tokens from the needle's end to the answer (question included) lie in
    [min_distance, max_distance] (max_distance None: up to what the length leaves), so recall can be read per
    distance at one length.
    template: the wording, a key of TEMPLATES or "mixed" (each example its own wording from the MIXED_* pools, drawn
    from a stream of its own: keys, filler and positions are those of the same seed's other wordings).
    """
    if template not in WORDINGS:
        raise ValueError(f"template must be one of {list(WORDINGS)}, got {template!r}")
    if max_distance is not None and max_distance < min_distance:
        raise ValueError(f"max_distance={max_distance} is below min_distance={min_distance}")
    rng = np.random.default_rng(seed)
    decoys, wordings = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))

    def enc(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    if template != MIXED:
        intro_t, needle_t, question_t, answer_t = TEMPLATES[template]
        intro, question = enc(intro_t), enc(question_t)
    rows, masks = [], []
    for _ in range(num_examples):
        if template == MIXED:
            intro_t, needle_t, question_t, answer_t = mixed_wording(wordings)
            intro, question = enc(intro_t), enc(question_t)
        key = int(rng.integers(10000, 100000))
        shown = key
        while decoy and shown == key:
            shown = int(decoys.integers(10000, 100000))
        needle, answer = enc(needle_t.format(key=shown)), enc(answer_t.format(key=key))
        fill = length - len(intro) - len(needle) - len(question) - len(answer)
        after_min = max(0, min_distance - len(question))  # filler tokens between needle and question
        if fill < after_min:
            raise ValueError(f"length={length} leaves {fill} filler tokens; needs >= {after_min} (min_distance)")
        if len(filler) < fill + 1:
            raise ValueError(f"the filler stream has {len(filler)} tokens; {fill} are needed")
        start = int(rng.integers(0, len(filler) - fill))
        text = [int(t) for t in filler[start : start + fill]]
        # filler between needle and question: after_min ... after_max tokens (fill - before of them)
        after_max = fill if max_distance is None else max(after_min, max_distance - len(question))
        before = int(rng.integers(max(0, fill - after_max), fill - after_min + 1))
        ids = intro + text[:before] + needle + text[before:] + question + answer
        mask = [False] * length
        for p in range(length - len(answer) - 1, length - 1):
            mask[p] = True
        rows.append(ids)
        masks.append(mask)
    import torch

    return {"input_ids": torch.tensor(rows, dtype=torch.long), "answer": torch.tensor(masks)}
