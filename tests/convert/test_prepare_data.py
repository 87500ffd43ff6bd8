"""scripts/prepare_t2r_data.py: text extraction from unpacked Debian packages (a fake tree; no network); and
scripts/t2r_carry.sh's two pieces."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts_under_test import load_script


@pytest.fixture(scope="module")
def prep():
    return load_script("scripts/prepare_t2r_data.py")


def _fake_root(root: Path) -> None:
    py = root / "usr/share/doc/python3.11-doc/html/_sources/library"
    py.mkdir(parents=True)
    (py / "os.rst.txt").write_text("os --- Miscellaneous operating system interfaces\n" + "text " * 100)
    (py / "stub.rst.txt").write_text("too short")
    lx = root / "usr/share/doc/linux-doc-6.1/Documentation"
    (lx / "admin-guide").mkdir(parents=True)
    (lx / "devicetree/bindings").mkdir(parents=True)
    with gzip.open(lx / "admin-guide/README.rst.gz", "wt") as f:
        f.write("Linux kernel release notes\n" + "kernel " * 100)
    (lx / "admin-guide/notes.txt").write_text("plain text notes " * 30)
    with gzip.open(lx / "devicetree/bindings/clock.yaml.gz", "wt") as f:
        f.write("yaml " * 100)
    with gzip.open(lx / "devicetree/bindings/board.txt.gz", "wt") as f:
        f.write("device tree prose " * 100)
    dictd = root / "usr/share/dictd"
    dictd.mkdir(parents=True)
    entries = "\n\n".join(f"word{i} \\word{i}\\ n.\n   A definition of word number {i}." for i in range(300))
    with gzip.open(dictd / "gcide.dict.dz", "wt") as f:
        f.write("00-database-info\n   header\n\n Begin file 1 of 26: Letter A\n   licence\n\n" + entries)


def test_extraction_and_jsonl(prep, tmp_path):
    root = tmp_path / "root"
    _fake_root(root)
    assert len(list(prep.python_doc_documents(root))) == 2
    linux = list(prep.linux_doc_documents(root))
    assert len(linux) == 2 and linux[0].startswith("Linux kernel")  # no device-tree files, .gz read
    gcide = list(prep.gcide_documents(root, chars=2000))
    assert len(gcide) > 1 and gcide[0].startswith("word0") and "header" not in "".join(gcide)
    assert "".join(gcide).count("A definition") == 300

    out = prep.write_jsonl(tmp_path, root, list(prep.PACKAGES))
    docs = [json.loads(line)["text"] for line in out.read_text().splitlines()]
    assert sum(d.startswith("os ---") for d in docs) == 1 and not any(d == "too short" for d in docs)
    assert sum("A definition" in d for d in docs) == len(list(prep.gcide_documents(root)))  # 8K-character chunks


def test_t2r_carry_packs_two_pieces_that_unpack_to_the_same_files(tmp_path):
    """scripts/t2r_carry.sh: the GGUF split over the two pieces, the token cache as an xz tar in the second; unpacked
    (SKIP_TEACHER=1: no wheels installed, no teacher rebuilt) the GGUF and every token file are byte for byte the
    packed ones (here at a 1 MB split point); a directory that is not a token cache is refused."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "t2r_carry.sh"
    src = tmp_path / "src"
    (src / "gguf").mkdir(parents=True)
    gguf = os.urandom(2_500_000)
    (src / "gguf" / "model.gguf").write_bytes(gguf)
    tokens = src / "tokens" / "tokens-abc"
    tokens.mkdir(parents=True)
    files = {"meta.json": b'{"eos": 2}', "train.bin": os.urandom(300_000), "heldout.bin": os.urandom(3000)}
    for name, data in files.items():
        (tokens / name).write_bytes(data)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in ("gguf-0.1-py3-none-any.whl", "accelerate-0.1-py3-none-any.whl"):
        (wheels / name).write_bytes(b"not a wheel")
    env = dict(os.environ, CARRY=str(tmp_path / "carry"), T2R_CACHE=str(src), PYTHON=sys.executable,
               WHEELS_FROM=str(wheels), PIECE_MB="1")
    r = subprocess.run(["bash", str(script), "pack"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "carry").iterdir()) == ["1", "2"]
    assert (tmp_path / "carry" / "1" / "gguf.part0").stat().st_size == 1_000_000
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(script), "unpack"], env=dict(env, T2R_CACHE=str(out), SKIP_TEACHER="1"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (out / "gguf" / "model.gguf").read_bytes() == gguf
    for name, data in files.items():
        assert (out / "tokens" / "tokens-abc" / name).read_bytes() == data
    r = subprocess.run(["bash", str(script), "pack", str(tmp_path)], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "is not a token cache directory" in r.stderr
