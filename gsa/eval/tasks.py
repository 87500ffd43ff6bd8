"""Zero-shot multiple-choice tasks built offline from held-out text, written as local lm-eval task files.

Documents are read as words (split on whitespace, rejoined with single spaces), so every task is independent of the
tokenizer and of the source's layout. One example is a row ``{"context": str, "choices": [str, ...], "answer": int,
"doc": int, "start": int}``: the choices are continuations of the context (each with its leading space), `answer`
indexes the true one, which is words ``start ...`` of document ``doc``, the context being the words just before
them; so an example can be checked against its source.

- ``cloze``: a passage of `context_words` words, then the next `continuation_words` words against `num_choices - 1`
  spans of as many words from random positions of other documents. The passages of one document do not overlap.
- ``next-sentence``: the `context_words` words before a sentence, then that sentence against sentences of other
  documents with between 2/3 and 3/2 of its words (so length says little). A sentence ends at a word ending in
  ``.``, ``!`` or ``?`` (ASCII closing quotes or brackets allowed) followed by a word starting with an ASCII capital
  A-Z (after ASCII opening quotes or brackets: "Élan" or a typographic quote does not start one); only sentences
  of `min_words` ... `max_words` words are asked or used as distractors.

Every distractor differs from the answer and from the other distractors. The answer positions are balanced (each
position ``n // num_choices`` or one more times, in a seeded order), so guessing scores 1 / num_choices. Everything
is deterministic given the documents and the seed.
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

TASKS = {"cloze": "gsa_cloze", "next-sentence": "gsa_next_sentence"}  # builder name -> lm-eval task name
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")
_SENTENCE_START = re.compile(r"[\"'(\[]*[A-Z]")
_MAX_TRIES = 50  # random draws per distractor before an example is given up


def build_task(task: str, documents: Sequence[str], num_examples: int = 200, num_choices: int = 4,
               context_words: int = 128, continuation_words: int = 12, seed: int = 0, min_words: int = 5,
               max_words: int = 40) -> list[dict]:
    """Up to `num_examples` rows of `task` ("cloze" or "next-sentence"); fewer where the documents hold fewer
    passages or sentences that qualify (none: ValueError). `continuation_words` is the cloze's answer length,
    `min_words` / `max_words` the next-sentence's sentence lengths."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    for name, value, low in (("num_examples", num_examples, 1), ("num_choices", num_choices, 2),
                             ("context_words", context_words, 1), ("continuation_words", continuation_words, 1),
                             ("min_words", min_words, 1), ("max_words", max_words, min_words)):
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    words = [doc.split() for doc in documents]
    rng = np.random.default_rng(seed)
    if task == "cloze":
        found = _cloze(words, num_examples, num_choices, context_words, continuation_words, rng)
    else:
        found = _next_sentence(words, num_examples, num_choices, context_words, min_words, max_words, rng)
    if not found:
        raise ValueError(f"no {task} example can be built from {len(words)} document(s) with {context_words} "
                         "context words (too short, too few documents, or too few distinct distractors)")
    positions = rng.permutation(np.arange(len(found)) % num_choices)
    rows = []
    for (doc, start, context, answer, distractors), at in zip(found, positions.tolist()):
        choices = [" " + d for d in distractors]
        choices.insert(at, " " + answer)
        rows.append({"context": context, "choices": choices, "answer": at, "doc": doc, "start": start})
    return rows


def _distractors(answer: str, draw, count: int) -> list[str] | None:
    """`count` distinct texts from `draw()` (None: a source document's own text), none equal to `answer`; None when
    the draws keep repeating."""
    out: list[str] = []
    for _ in range(_MAX_TRIES * count):
        text = draw()
        if text is not None and text != answer and text not in out:
            out.append(text)
            if len(out) == count:
                return out
    return None


def _cloze(words, n, k, context_words, continuation_words, rng) -> list[tuple]:
    """(doc, start, context, answer, distractors) of up to `n` non-overlapping passages, in a seeded order."""
    span = context_words + continuation_words
    sites = [(d, s) for d, w in enumerate(words) for s in range(0, len(w) - span + 1, span)]
    donors = [d for d, w in enumerate(words) if len(w) >= continuation_words]
    found = []
    for i in rng.permutation(len(sites)).tolist():
        d, s = sites[i]
        start = s + context_words

        def draw(d=d):
            other = donors[int(rng.integers(len(donors)))]
            if other == d:
                return None
            at = int(rng.integers(len(words[other]) - continuation_words + 1))
            return " ".join(words[other][at : at + continuation_words])

        answer = " ".join(words[d][start : start + continuation_words])
        distractors = _distractors(answer, draw, k - 1)
        if distractors is not None:
            found.append((d, start, " ".join(words[d][s:start]), answer, distractors))
            if len(found) == n:
                break
    return found


def sentence_spans(words: Sequence[str]) -> list[tuple[int, int]]:
    """[(first, end)] word ranges of the sentences of one document's words (the rule in the module docstring)."""
    spans, first = [], 0
    for i, w in enumerate(words):
        if i + 1 == len(words) or (_SENTENCE_END.search(w) and _SENTENCE_START.match(words[i + 1])):
            spans.append((first, i + 1))
            first = i + 1
    return spans


def _next_sentence(words, n, k, context_words, min_words, max_words, rng) -> list[tuple]:
    """(doc, start, context, answer, distractors) of up to `n` sentences with `context_words` words before them."""
    sentences = [(d, a, b) for d, w in enumerate(words) for a, b in sentence_spans(w)
                 if min_words <= b - a <= max_words]
    by_length: dict[int, list[int]] = {}
    for j, (_, a, b) in enumerate(sentences):
        by_length.setdefault(b - a, []).append(j)
    sites = [j for j, (_, a, _) in enumerate(sentences) if a >= context_words]
    found = []
    for j in rng.permutation(sites).tolist():
        d, a, b = sentences[j]
        size = b - a
        pool = [m for length in range(-(-2 * size // 3), 3 * size // 2 + 1) for m in by_length.get(length, ())]

        def draw(d=d, pool=pool):
            od, oa, ob = sentences[pool[int(rng.integers(len(pool)))]]
            return None if od == d else " ".join(words[od][oa:ob])

        distractors = _distractors(" ".join(words[d][a:b]), draw, k - 1)
        if distractors is not None:
            found.append((d, a, " ".join(words[d][a - context_words : a]), " ".join(words[d][a:b]), distractors))
            if len(found) == n:
                break
    return found


_YAML = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: answer
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def _yaml_string(text: str) -> str:
    """`text` as a YAML double-quoted scalar: printable ASCII as is (quote and backslash escaped), any other character
    as a \\u or \\U escape (JSON's surrogate pairs for characters beyond U+FFFF are no YAML escape)."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif " " <= c <= "~":
            out.append(c)
        else:
            out.append(f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}")
    return '"' + "".join(out) + '"'


def write_task(task: str, rows: Sequence[dict], out_dir: str | Path) -> Path:
    """Write ``<out_dir>/<name>.jsonl`` and the lm-eval task ``<out_dir>/<name>.yaml`` (name: TASKS[task]); return
    the YAML's path. The YAML names the JSONL by its absolute path (lm-eval reads a relative one from the working
    directory), so a moved directory is rebuilt (deterministic) or its YAML edited. The path's glob characters are
    escaped: datasets reads data_files as patterns, so a folder "out [v2]" matched nothing and "out*" matched
    "out2"'s file too."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = TASKS[task]
    data = out / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    yaml = out / f"{name}.yaml"
    yaml.write_text(_YAML.format(name=name, data=_yaml_string(glob.escape(str(data.resolve())))), encoding="utf-8")
    return yaml
