"""`gsa generate`: continue a prompt with a saved GSA model (greedy or sampled; `generate()` or StaticDecoder)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gsa.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, type=Path, help="directory written by save_pretrained (a GSA model)")
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="prompt text (needs a tokenizer saved in the model directory)")
    prompt.add_argument("--prompt-ids", help="prompt token ids, comma-separated, e.g. 1,2,3")
    p.add_argument("--max-new-tokens", type=int, default=32, help="number of tokens to generate (default 32)")
    p.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, help="sampling temperature (> 0; default 1.0; needs --do-sample)")
    p.add_argument("--top-k", type=int, help="sample among the k most likely tokens (needs --do-sample)")
    p.add_argument("--top-p", type=float, help="nucleus sampling mass in (0, 1] (needs --do-sample)")
    p.add_argument("--seed", type=int, default=0, help="random seed for sampling (default 0)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    p.add_argument("--static", action="store_true",
                   help="decode with gsa.models.StaticDecoder (owned in-place state buffers, device-side sampling)")
    p.add_argument("--compile", action="store_true",
                   help="StaticDecoder with a torch.compile'd step, captured in a CUDA graph on CUDA (implies --static)")


def _has_tokenizer(model_dir: Path) -> bool:
    return any((model_dir / name).exists() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def _parse_ids(text: str) -> list[int]:
    try:
        ids = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--prompt-ids must be comma-separated integers, got {text!r}") from None
    if not ids:
        raise InputError(f"--prompt-ids must name at least one token id, got {text!r}")
    return ids


def _cut_after_eos(ids: list[int], prompt_len: int, eos) -> list[int]:
    """Drop what follows the first end-of-sequence token of the continuation (generate() stops there)."""
    eos = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    for i in range(prompt_len, len(ids)):
        if ids[i] in eos:
            return ids[: i + 1]
    return ids


def _check_args(args: argparse.Namespace) -> dict:
    """The sampling options given (InputError for the first flag out of range, before anything is loaded)."""
    sampling = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p}
    given = {k: v for k, v in sampling.items() if v is not None}
    if given and not args.do_sample:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise InputError(f"{flags} only apply with --do-sample")
    if args.max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.temperature is not None and not 0 < args.temperature < float("inf"):
        raise InputError(f"--temperature must be a finite number > 0, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise InputError(f"--top-k must be >= 1, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise InputError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.prompt == "":
        raise InputError("--prompt is empty: give some text to continue")
    return given


def _prompt(args: argparse.Namespace, tokenizer, vocab_size: int):
    """The prompt's token ids, [1, T]."""
    import torch

    if args.prompt is not None:
        ids = tokenizer(args.prompt, return_tensors="pt").input_ids
        if ids.shape[1] == 0:
            raise InputError(f"--prompt {args.prompt!r} gives no tokens")
        return ids
    ids = _parse_ids(args.prompt_ids)
    if not all(0 <= i < vocab_size for i in ids):
        raise InputError(f"--prompt-ids must be ids in [0, {vocab_size}), got {args.prompt_ids!r}")
    return torch.tensor([ids])


def run(args: argparse.Namespace) -> int:
    given = _check_args(args)

    import torch
    from transformers import AutoTokenizer

    from gsa.models.configuration import GSAConfig
    from gsa.models.loading import check_model_dir, load_pretrained, resolve_device

    device = resolve_device(args.device)
    if args.prompt_ids is not None:
        _parse_ids(args.prompt_ids)
    check_model_dir(args.model, accept=[GSAConfig.model_type])
    if args.prompt is not None and not _has_tokenizer(args.model):
        raise InputError(f"{args.model} has no tokenizer; pass --prompt-ids instead of --prompt")
    model = load_pretrained(args.model, accept=[GSAConfig.model_type]).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model) if _has_tokenizer(args.model) else None
    ids = _prompt(args, tokenizer, model.config.vocab_size).to(device)

    torch.manual_seed(args.seed)
    config = model.config
    pad = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    if isinstance(pad, list):
        pad = pad[0]
    if args.static or args.compile:
        from gsa.models import StaticDecoder

        decoder = StaticDecoder(model, 1, compile=args.compile, cuda_graph=args.compile and device.type == "cuda")
        out = decoder.generate(ids, max_new_tokens=args.max_new_tokens, do_sample=args.do_sample,
                               eos_token_id=config.eos_token_id, pad_token_id=0 if pad is None else pad,
                               **given)[0].tolist()
        out = _cut_after_eos(out, ids.shape[1], config.eos_token_id)
    else:
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=args.max_new_tokens,
            do_sample=args.do_sample,
            pad_token_id=pad,
            **given,
        )[0].tolist()
    if tokenizer is not None:
        print(tokenizer.decode(out, skip_special_tokens=True))
    else:
        print(",".join(str(i) for i in out))
    return 0
