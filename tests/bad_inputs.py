"""Damaged model directories and unreadable data files, for the bad-input tests (tests/test_bad_inputs.py and the
per-package ones). Each is a small variation of one tiny saved GSA model (d = 32, 2 layers, a byte tokenizer)."""

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from gsa.models import GSAConfig, GSAForCausalLM
from gsa.models.loading import WEIGHTS_MANIFEST

VOCAB = 257  # the byte tokenizer's 256 bytes + end of text


def save_tiny(path: Path, tokenizer: bool = True) -> Path:
    from gsa.data import byte_tokenizer

    torch.manual_seed(0)
    config = GSAConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_heads=4, num_slots=8,
                       intermediate_size=64, pad_token_id=256, bos_token_id=None, eos_token_id=256)
    GSAForCausalLM(config).save_pretrained(path)
    if tokenizer:
        byte_tokenizer().save_pretrained(path)
    return path


def _variant(good: Path, path: Path, config=None, weights=None, manifest: bool = False) -> Path:
    """A copy of `good` with config.json edited by `config(dict)` and the weights by `weights(dict)`; without the
    weights manifest (an older save, or files changed by hand) unless `manifest`."""
    shutil.copytree(good, path)
    if not manifest:
        (path / WEIGHTS_MANIFEST).unlink()
    if config is not None:
        raw = json.loads((path / "config.json").read_text())
        config(raw)
        (path / "config.json").write_text(json.dumps(raw))
    if weights is not None:
        sd = load_file(path / "model.safetensors")
        weights(sd)
        save_file(sd, path / "model.safetensors", metadata={"format": "pt"})
    return path


def damaged_models(root: Path) -> dict[str, Path]:
    """name -> a model directory that must not load (plus "good" and "plain", a good one without a tokenizer)."""
    good = save_tiny(root / "good")
    out = {"good": good, "plain": save_tiny(root / "plain", tokenizer=False)}
    fla_keys = {"attn": None, "fuse_norm": True, "fuse_cross_entropy": True, "use_output_gate": False}

    def nan_norm(sd):
        sd["model.norm.weight"] = torch.full_like(sd["model.norm.weight"], float("nan"))

    edits = {
        "no_q_proj": dict(weights=lambda sd: sd.pop("model.layers.1.attn.q_proj.weight")),
        "no_lm_head": dict(weights=lambda sd: sd.pop("lm_head.weight")),
        "more_layers": dict(config=lambda c: c.update(num_hidden_layers=3)),
        "fewer_layers": dict(config=lambda c: c.update(num_hidden_layers=1)),
        "other_slots": dict(config=lambda c: c.update(num_slots=16)),
        "llama_type": dict(config=lambda c: c.update(model_type="llama")),
        "fla_config": dict(config=lambda c: c.update(fla_keys, model_type="gsa")),  # fla's GSA models are "gsa"
        "nan_weights": dict(weights=nan_norm),
        "corrupted": dict(manifest=True),
        "truncated": dict(manifest=True),
        "no_config": dict(),
        "bad_json_config": dict(),
    }
    for name, edit in edits.items():
        out[name] = _variant(good, root / name, **edit)
    weights = out["corrupted"] / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    weights = out["truncated"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    (out["no_config"] / "config.json").unlink()
    (out["bad_json_config"] / "config.json").write_text('{"model_type": "gsa",')
    return out


def bad_data_files(root: Path) -> dict[str, Path]:
    """name -> a data file that is not usable text (plus "one_doc", a good single-document .txt)."""
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "binary.txt": bytes(range(256)) * 4,
        "utf16.txt": "some text in UTF-16".encode("utf-16-le"),
        "empty.txt": b"",
        "blank.txt": b" \n\n ",
        "bad_json.jsonl": b'{"text": "a fine line"}\n{"text": "cut short\n',
        "not_object.jsonl": b'["text", "in a list"]\n',
        "no_field.jsonl": b'{"body": "the text is elsewhere"}\n',
        "number_field.jsonl": b'{"text": 42}\n',
        "binary_line.jsonl": b'{"text": "fine"}\n{"text": "\xff\xfe"}\n',
        "one_doc.txt": ("One document of plain English text, long enough to measure. " * 20).encode(),
    }
    out = {}
    for name, data in files.items():
        (root / name).write_bytes(data)
        out[name.split(".")[0]] = root / name
    return out
