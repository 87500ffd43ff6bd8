"""``gsa eval ppl``, ``mqar``, ``tasks`` and ``harness`` (also ``python -m gsa.eval ...``)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from gsa.data.sources import BUILTIN_CORPUS
from gsa.errors import InputError, one_line, run_command

from .tasks import TASKS


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="eval_task", required=True, metavar="TASK")
    ppl = sub.add_parser("ppl", help="perplexity and bits per byte on text",
                         description="Perplexity and bits per byte of a saved model on text.")
    _model_args(ppl)
    _data_args(ppl)
    ppl.add_argument("--tokenizer", help="tokenizer directory (default: the one saved with the model)")
    ppl.add_argument("--seq-len", type=int, default=512, help="window length in tokens (default 512)")
    ppl.add_argument("--max-tokens", type=int, help="evaluate at most this many tokens")
    mq = sub.add_parser("mqar", help="MQAR recall accuracy per number of key-value pairs",
                        description="Multi-query associative recall accuracy (gsa.data.mqar). A model trained by "
                                    "`gsa train` on MQAR is tested in the vocabulary and example format it was "
                                    "trained on (its mqar.json) unless --vocab-size / --format say otherwise.")
    _model_args(mq)
    mq.add_argument("--seq-len", type=int, default=512, help="sequence length (default 512)")
    mq.add_argument("--pairs", type=int, nargs="+", default=[4, 8, 16, 32, 64], help="pair counts to test")
    mq.add_argument("--num-examples", type=int, default=256, help="examples per pair count (default 256)")
    mq.add_argument("--vocab-size", type=int,
                    help="MQAR vocabulary (default: as trained, from the model's mqar.json; else 8192)")
    mq.add_argument("--format", choices=["query-values", "zoology"],
                    help="example format (default: as trained, from the model's mqar.json; else query-values). "
                         "query-values: the value follows each query key in the input too, filler 0; zoology: "
                         "Zoology's own, filler after each query key and random filler tokens "
                         "(data.mqar_query_values=false, data.mqar_random_fill=true)")
    mq.add_argument("--seed", type=int, default=0, help="test-set seed (default 0)")
    tasks = sub.add_parser("tasks", help="build multiple-choice tasks from held-out text (lm-eval task files)",
                           description="Build zero-shot multiple-choice tasks from text (gsa.eval.tasks) as local "
                                       "lm-eval task files; score a model on them with `gsa eval harness "
                                       "--include-path OUT`.")
    tasks.add_argument("--build", nargs="+", required=True, choices=list(TASKS), metavar="TASK",
                       help="cloze (a passage's next words against spans of other documents) and/or next-sentence "
                            "(a sentence against sentences of other documents)")
    _data_args(tasks)
    tasks.add_argument("--out", required=True, type=Path, help="directory for <task>.jsonl and <task>.yaml")
    tasks.add_argument("--examples", type=int, default=200, help="examples per task, at most (default 200)")
    tasks.add_argument("--choices", type=int, default=4, help="choices per example (default 4; chance 1/choices)")
    tasks.add_argument("--context-words", type=int, default=128, help="words of context (default 128)")
    tasks.add_argument("--continuation-words", type=int, default=12, help="words of a cloze answer (default 12)")
    tasks.add_argument("--seed", type=int, default=0, help="seed of the passages, distractors and order (default 0)")
    from .harness import add_arguments as harness_arguments

    harness_arguments(sub.add_parser("harness", help="lm-evaluation-harness tasks (needs lm-eval)",
                                     description="Run lm-evaluation-harness tasks on a saved model."))


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", default=[BUILTIN_CORPUS],
                   help="text sources: .txt/.jsonl/.parquet files, directories, globs, or python-docs (default)")
    p.add_argument("--split", choices=["heldout", "all"],
                   help="heldout: only the documents the trainer held out (same --heldout-fraction and "
                   "--split-seed as training); all: every document. Default: heldout for python-docs (the corpus "
                   "training defaults to), all for your own --data")
    p.add_argument("--heldout-fraction", type=float, default=0.02, help="as data.heldout_fraction (default 0.02)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the held-out split (default 0)")
    p.add_argument("--text-field", default="text", help="text field of .jsonl/.parquet rows (default text)")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, type=Path, help="model directory (save_pretrained layout)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward (default 8)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--json", type=Path, help="also write the result to this JSON file")


def _check_args(args: argparse.Namespace) -> None:
    """InputError naming the first flag with a value out of range (before anything is loaded)."""
    at_least = {"--batch-size": (args.batch_size, 1), "--seq-len": (args.seq_len, 2 if args.eval_task == "ppl" else 1)}
    if args.eval_task == "ppl":
        at_least["--max-tokens"] = (args.max_tokens, 2)
    else:
        at_least["--num-examples"] = (args.num_examples, 1)
        at_least["--vocab-size"] = (args.vocab_size, 4)
        at_least["--pairs"] = (min(args.pairs), 1)
    for flag, (value, low) in at_least.items():
        if value is not None and value < low:
            raise InputError(f"{flag} must be >= {low}, got {value}")
    if args.eval_task == "ppl" and not 0 <= args.heldout_fraction < 1:
        raise InputError(f"--heldout-fraction must be in [0, 1), got {args.heldout_fraction}")
    if args.json is not None and not args.json.parent.is_dir():
        raise InputError(f"--json {args.json}: directory {args.json.parent} does not exist")


def _load(args, device):
    import torch

    from gsa.models.loading import load_pretrained

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return load_pretrained(args.model, dtype=dtype).to(device).eval()


def _documents(args: argparse.Namespace):
    """(the --data documents of the split, the split's name), the sources checked to exist."""
    from gsa.data.cache import _is_heldout
    from gsa.data.sources import expand_sources, iter_documents

    try:
        expand_sources(args.data)
    except FileNotFoundError as e:
        raise InputError(f"--data: {one_line(e)}") from None
    split = args.split or ("heldout" if args.data == [BUILTIN_CORPUS] else "all")
    docs = iter_documents(args.data, args.text_field)
    if split == "heldout":
        docs = (doc for i, doc in enumerate(docs) if _is_heldout(i, args.heldout_fraction, args.split_seed))
    return docs, split


def _ppl_tokens(args: argparse.Namespace):
    """(the token stream, the tokenizer, the split's name) of `gsa eval ppl`."""
    from transformers import AutoTokenizer

    from .perplexity import token_stream

    tok_dir = args.tokenizer or args.model
    if not Path(tok_dir).is_dir():
        raise InputError(f"--tokenizer {tok_dir} is not a directory")
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    except (OSError, ValueError) as e:
        raise InputError(f"no tokenizer in {tok_dir} (pass --tokenizer DIR): {one_line(e)}") from None
    docs, split = _documents(args)
    tokens = token_stream(docs, tokenizer, args.max_tokens)
    if len(tokens) < 2:
        where = " in its held-out split (--split all measures every document)" if split == "heldout" else ""
        raise InputError(f"--data {' '.join(args.data)} gives {len(tokens)} token(s){where}: perplexity needs 2")
    return tokens, tokenizer, split


def _run_ppl(args: argparse.Namespace, model, device) -> dict:
    from gsa.data.tokenizer import token_byte_lengths

    from .perplexity import perplexity

    tokens, tokenizer, split = _ppl_tokens(args)
    result = perplexity(model, tokens, token_byte_lengths(tokenizer), args.seq_len, args.batch_size, device,
                        progress=True)
    print(f"perplexity {result['ppl']:.3f}  loss {result['loss']:.4f} nats/token  "
          f"bits/byte {result['bits_per_byte']:.4f}  ({result['tokens']:,} tokens, {result['bytes']:,} bytes; "
          f"split {split})")
    return result


def _mqar_settings(args: argparse.Namespace) -> tuple[int, bool, bool, dict]:
    """(vocabulary, query_values, random_fill, the settings the model was trained with) of `gsa eval mqar`, with
    every test set's size checked."""
    from gsa.data import MQAR_ALPHA, MQAR_VOCAB, mqar_batch, read_mqar_settings

    try:
        trained = read_mqar_settings(args.model) or {}
    except ValueError as e:
        raise InputError(one_line(e)) from None
    vocab_size = args.vocab_size if args.vocab_size is not None else trained.get("vocab_size", MQAR_VOCAB)
    if args.format is None:  # as trained, else our default format
        qv, rf = trained.get("query_values", True), trained.get("random_fill", False)
    else:
        qv, rf = args.format == "query-values", args.format == "zoology"
    for pairs in args.pairs:
        try:  # mqar_batch checks its sizes before drawing anything
            mqar_batch(1, args.seq_len, pairs, vocab_size, trained.get("alpha", MQAR_ALPHA), seed=0)
        except ValueError as e:
            raise InputError(f"--pairs {pairs} with --seq-len {args.seq_len}, vocabulary {vocab_size}: "
                             f"{one_line(e)}") from None
    return vocab_size, qv, rf, trained


def _run_mqar(args: argparse.Namespace, settings: tuple[int, bool, bool, dict], model, device) -> dict:
    from gsa.data import MQAR_ALPHA

    from .mqar import mqar_eval

    vocab_size, qv, rf, trained = settings
    if vocab_size > model.config.vocab_size:
        raise InputError(f"--vocab-size {vocab_size} exceeds the model's {model.config.vocab_size}")
    if trained and (qv, rf) != (trained["query_values"], trained["random_fill"]):
        print(f"warning: {args.model} was trained with query_values={trained['query_values']}, "
              f"random_fill={trained['random_fill']}; testing with --format {args.format}", file=sys.stderr)
    acc = mqar_eval(model, args.seq_len, args.pairs, args.num_examples, args.batch_size, vocab_size,
                    alpha=trained.get("alpha", MQAR_ALPHA), seed=args.seed, device=device, query_values=qv,
                    random_fill=rf)
    print(f"MQAR accuracy at seq_len {args.seq_len}, vocabulary {vocab_size}, query_values={qv}, "
          f"random_fill={rf}{' (as trained)' if trained and args.format is None else ''}")
    print("pairs  accuracy")
    for d, a in acc.items():
        print(f"{d:>5}  {a:8.4f}")
    return {"seq_len": args.seq_len, "vocab_size": vocab_size, "query_values": qv, "random_fill": rf,
            "accuracy": acc}


def _run_tasks(args: argparse.Namespace) -> int:
    from .tasks import build_task, write_task

    for flag, value, low in (("--examples", args.examples, 1), ("--choices", args.choices, 2),
                             ("--context-words", args.context_words, 1),
                             ("--continuation-words", args.continuation_words, 1)):
        if value < low:
            raise InputError(f"{flag} must be >= {low}, got {value}")
    if not 0 <= args.heldout_fraction < 1:
        raise InputError(f"--heldout-fraction must be in [0, 1), got {args.heldout_fraction}")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} is a file, not a directory")
    docs, split = _documents(args)
    docs = list(docs)
    for task in dict.fromkeys(args.build):
        try:
            rows = build_task(task, docs, args.examples, args.choices, args.context_words, args.continuation_words,
                              args.seed)
        except ValueError as e:
            raise InputError(f"--build {task} on --data {' '.join(args.data)} (split {split}): {one_line(e)}") from None
        path = write_task(task, rows, args.out)
        fewer = f" (of {args.examples} asked: the documents hold no more)" if len(rows) < args.examples else ""
        print(f"{TASKS[task]}: {len(rows)} examples{fewer} of {args.choices} choices from {len(docs)} documents "
              f"(split {split}) -> {path}")
    names = ",".join(TASKS[t] for t in dict.fromkeys(args.build))
    print(f"score with: gsa eval harness --model MODEL --tasks {names} --include-path {shlex.quote(str(args.out))}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.eval_task == "harness":
        from .harness import run as run_harness

        return run_harness(args)
    if args.eval_task == "tasks":
        return _run_tasks(args)
    from gsa.models.loading import check_model_dir, resolve_device

    _check_args(args)
    device = resolve_device(args.device)
    check_model_dir(args.model)
    settings = _mqar_settings(args) if args.eval_task == "mqar" else None  # its errors before a model is loaded
    model = _load(args, device)
    if args.eval_task == "ppl":
        result = _run_ppl(args, model, device)
    else:
        result = _run_mqar(args, settings, model, device)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gsa.eval", description="Evaluate a saved model.")
    add_arguments(p)
    args = p.parse_args(argv)
    return run_command(f"{p.prog} {args.eval_task}", run, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
