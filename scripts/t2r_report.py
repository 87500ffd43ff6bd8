"""Evaluate a T2R run: teacher, its sliding-window(64) + 4-sinks restriction, and any number of GSA students, on the
same held-out windows (perplexity, recovery = teacher ppl / student ppl), the passkey probe at several lengths
(with its control: another key in the needle) and, with --passkey-distances, at one length per needle distance,
decode speed (ms/token, batch 1, greedy, after a 512-token prompt) and, with --tasks, zero-shot multiple-choice
accuracy (gsa.eval.tasks, built from the held-out documents of --tokens; scored as lm-eval does, gsa.eval.choice)
with task recovery = student acc / teacher acc. Writes one JSON and prints a table.

    python scripts/t2r_report.py --tokens .cache/t2r/tokens/tokens-<key> --teacher .cache/t2r/teacher \
        --student recipe-b=runs/t2r-stage2/model --student paper=runs/t2r-paper/model \
        --tasks cloze,next-sentence --out t2r.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gsa.convert.baselines import sink_window_logits  # noqa: E402
from gsa.data import Windows, load_text_data  # noqa: E402
from gsa.eval.choice import multiple_choice_scores  # noqa: E402
from gsa.eval.perplexity import perplexity  # noqa: E402
from gsa.eval.passkey import passkey_batch, passkey_scores  # noqa: E402
from gsa.eval.tasks import TASKS, build_task  # noqa: E402


class _LogitsModel:
    """A logits function in the shape gsa.eval.perplexity expects of a model (eval(), __call__(input_ids).logits)."""

    def __init__(self, fn):
        self.fn = fn

    def eval(self):
        return self

    def __call__(self, input_ids):
        return SimpleNamespace(logits=self.fn(input_ids))


class _TokenClock:
    """A `generate` streamer that records when each generated token reaches the host (`put` is called with the
    prompt first, then once per decoding step with that step's token; on a GPU the copy to the host waits for it)."""

    def __init__(self):
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value):
        if self._prompt_seen:
            self.times.append(time.perf_counter())
        self._prompt_seen = True

    def end(self):
        pass


@torch.no_grad()
def decode_ms_per_token(model, prompt: torch.Tensor, new: int) -> float:
    """ms a generated token after the prompt: the median gap between consecutive tokens of one greedy `generate` of
    `new` >= 2 tokens (the first token's time holds the prefill and is left out). Each gap is one decoding step timed
    on its own, so the figure cannot go negative, as (time of `new` tokens - time of 1) / (new - 1) can on a busy
    2-core machine, where the prefill's jitter exceeds the decode time it is subtracted from."""
    if new < 2:
        raise ValueError(f"decode_ms_per_token needs new >= 2 tokens (one gap between two), got {new}")
    model.generate(prompt, max_new_tokens=4, do_sample=False)  # warm-up
    clock = _TokenClock()
    out = model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False, streamer=clock)
    assert out.shape[1] == prompt.shape[1] + new and len(clock.times) == new, (out.shape, len(clock.times))
    return statistics.median(b - a for a, b in zip(clock.times, clock.times[1:])) * 1e3


def heldout_tasks(data, names: list[str], examples: int, context_words: int, seed: int) -> dict[str, list[dict]]:
    """{task: rows} of gsa.eval.tasks built from the held-out documents of `data` (a gsa.data.TextData), decoded
    from their tokens (so the token cache alone suffices; EOS dropped)."""
    if not names:
        return {}
    corpus = data.heldout
    docs = [data.tokenizer.decode(corpus.document(i)[:-1].tolist(), clean_up_tokenization_spaces=False)
            for i in range(corpus.num_documents)]
    return {t: build_task(t, docs, examples, context_words=context_words, seed=seed) for t in names}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", required=True, help="token cache directory (held-out split used)")
    p.add_argument("--teacher", required=True, help="teacher checkpoint directory (also the tokenizer)")
    p.add_argument("--student", action="append", default=[], help="NAME=DIR of a saved GSA model (repeatable)")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--eval-sequences", type=int, default=256, help="held-out windows (the trainer's eval set)")
    p.add_argument("--passkey-lengths", default="512,1024,2048")
    p.add_argument("--passkey-examples", type=int, default=50)
    p.add_argument("--passkey-distances", default="",
                   help="LO-HI,... needle-to-answer token distances, each probed at --passkey-distance-length")
    p.add_argument("--passkey-distance-length", type=int, default=1024)
    p.add_argument("--passkey-templates", default="",
                   help="other wordings (gsa.eval.passkey.TEMPLATES keys), each probed at --passkey-lengths")
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--sinks", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--decode-tokens", type=int, default=128, help="0 skips the decode timing (else >= 2)")
    p.add_argument("--tasks", default="", help=f"multiple-choice tasks, comma-separated: {', '.join(TASKS)}")
    p.add_argument("--task-examples", type=int, default=200, help="examples per task, at most (4 choices each)")
    p.add_argument("--task-context-words", type=int, default=128, help="words of context of a task example")
    p.add_argument("--task-seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.decode_tokens == 1 or args.decode_tokens < 0:
        p.error(f"--decode-tokens must be 0 (no timing) or >= 2 (a gap between two tokens), got {args.decode_tokens}")
    task_names = [t for t in args.tasks.split(",") if t]
    if any(t not in TASKS for t in task_names):
        p.error(f"--tasks takes {', '.join(TASKS)}, got {args.tasks!r}")
    for flag, value in (("--task-examples", args.task_examples), ("--task-context-words", args.task_context_words)):
        if value < 1:
            p.error(f"{flag} must be >= 1, got {value}")

    import gsa.models  # noqa: F401  (Auto classes)
    from transformers import AutoModelForCausalLM

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    data = load_text_data(args.tokens, args.teacher)
    windows = Windows(data.heldout, args.seq_len)
    n = min(len(windows), args.eval_sequences)
    heldout = data.heldout.tokens[: n * args.seq_len]  # the first n windows, as the trainer's evaluation
    # probe label -> passkey_batch arguments: one per length (the needle >= 128 tokens back), one per distance range
    specs = {str(L): dict(length=L, seed=L) for L in (int(x) for x in args.passkey_lengths.split(",") if x)}
    for name in (t for t in args.passkey_templates.split(",") if t):
        specs.update({f"{name}{L}": dict(length=int(L), seed=int(L), template=name)
                      for L in args.passkey_lengths.split(",") if L})
    for rng in (r for r in args.passkey_distances.split(",") if r):
        lo, hi = (int(x) for x in rng.split("-"))
        specs[f"d{lo}-{hi}"] = dict(length=args.passkey_distance_length, seed=lo, min_distance=lo, max_distance=hi)
    probes = {k: passkey_batch(data.tokenizer, data.heldout.tokens, num_examples=args.passkey_examples, **kw)
              for k, kw in specs.items()}
    # the control: the same examples with another key in the needle (what the answer's format alone scores)
    controls = {k: passkey_batch(data.tokenizer, data.heldout.tokens, num_examples=args.passkey_examples,
                                 decoy=True, **kw) for k, kw in specs.items()}
    labels = list(specs)
    try:
        tasks = heldout_tasks(data, task_names, args.task_examples, args.task_context_words, args.task_seed)
    except ValueError as e:
        p.error(f"--tasks {args.tasks} on the held-out documents of {args.tokens}: {e}")
    prompt = torch.from_numpy(windows[0][None]).to(device)

    def load(path):
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()

    teacher = load(args.teacher)
    models = {"teacher": (teacher, lambda x: teacher(x).logits),
              f"teacher, window {args.window} + {args.sinks} sinks":
                  (None, lambda x: sink_window_logits(teacher, x, window=args.window, sinks=args.sinks))}
    for spec in args.student:
        name, path = spec.split("=", 1)
        m = load(path)
        models[name] = (m, (lambda mm: lambda x: mm(x).logits)(m))
    rows = []
    for name, (model, fn) in models.items():
        t0 = time.time()
        row = {"model": name, "ppl": perplexity(_LogitsModel(fn), heldout, seq_len=args.seq_len,
                                                 batch_size=args.batch_size, device=device)["ppl"]}
        for L, batch in probes.items():
            scores = passkey_scores(fn, batch, args.batch_size, device)
            row[f"passkey_{L}"], row[f"passkey_tok_{L}"] = scores["exact"], scores["token"]
            row[f"passkey_ctl_{L}"] = passkey_scores(fn, controls[L], args.batch_size, device)["token"]
        for task, examples in tasks.items():
            scores = multiple_choice_scores(fn, data.tokenizer, examples, args.batch_size, device)
            row[f"{task}_acc"], row[f"{task}_acc_norm"] = scores["acc"], scores["acc_norm"]
        if model is not None and args.decode_tokens:
            row["decode_ms_per_token"] = decode_ms_per_token(model, prompt, args.decode_tokens)
        row["eval_s"] = time.time() - t0
        rows.append(row)
        print(json.dumps(row), flush=True)
    teacher_ppl = rows[0]["ppl"]
    for r in rows:
        r["recovery"] = teacher_ppl / r["ppl"]
        for task in tasks:  # None where the teacher got nothing right (no ceiling to recover)
            teacher_acc = rows[0][f"{task}_acc"]
            r[f"{task}_recovery"] = r[f"{task}_acc"] / teacher_acc if teacher_acc else None
    payload = {"tokens": str(args.tokens), "heldout_windows": n, "seq_len": args.seq_len, "device": str(device),
               "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
               "tasks": {t: {"examples": len(ex), "choices": len(ex[0]["choices"]), "chance": 1 / len(ex[0]["choices"]),
                             "context_words": args.task_context_words, "seed": args.task_seed}
                         for t, ex in tasks.items()},
               "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1))
    cols = (["ppl", "recovery"] + [f"passkey_{L}" for L in labels] + [f"passkey_tok_{L}" for L in labels]
            + [f"passkey_ctl_{L}" for L in labels] + ["decode_ms_per_token"]
            + [f"{t}_{m}" for t in tasks for m in ("acc", "acc_norm", "recovery")])
    widths = [max(15, len(c) + 1) for c in cols]
    print("\n" + "model".ljust(34) + "".join(c.rjust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print(r["model"][:33].ljust(34) + "".join(
            (f"{r[c]:{w}.3f}" if isinstance(r.get(c), float) else "-".rjust(w)) for c, w in zip(cols, widths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
