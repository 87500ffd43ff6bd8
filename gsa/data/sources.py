"""Text sources: the user's files and the built-in corpus that ships with every Python installation.

A *source spec* is a string:

- ``"python-docs"``: the default corpus, built without any download from the documentation topics of the
  running interpreter (``pydoc_data.topics``) and the docstrings of its standard library (read with ``ast``,
  never imported, so nothing in the standard library runs);
- a ``.txt`` file (one document per file), a ``.jsonl`` file (one document per line, the text in the field
  ``text_field``), a ``.parquet`` file (needs ``pyarrow``, imported only then);
- a directory (every such file below it, sorted) or a glob pattern.

Every reader yields documents (``str``) in a fixed order, so tokenization and data order are reproducible.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import json
import os
import sys
import sysconfig
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from gsa.errors import InputError

BUILTIN_CORPUS = "python-docs"
TEXT_SUFFIXES = (".txt", ".jsonl", ".parquet")
# Standard-library folders whose docstrings are test fixtures or vendored code, not prose.
_SKIP_DIRS = {"test", "tests", "site-packages", "dist-packages", "idlelib", "lib2to3", "__pycache__", "turtledemo"}


def python_docs_corpus() -> list[str]:
    """The no-download default corpus: one document per pydoc topic, one per standard-library module.

    A module's document is its docstrings (module, classes, functions, methods) joined by blank lines. About
    10 MB of English on CPython 3.11; identical for a given interpreter build.
    """
    docs: list[str] = []
    try:
        from pydoc_data.topics import topics
    except ImportError:  # a stripped installation; the docstrings still work
        topics = {}
    for name in sorted(topics):
        text = topics[name].strip()
        if text:
            docs.append(text)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in _stdlib_sources(stdlib):
        text = _module_docstrings(path)
        if text:
            docs.append(text)
    return docs


def _stdlib_sources(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    return out


def _module_docstrings(path: Path) -> str:
    try:
        source = path.read_text(encoding="utf-8")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in old modules
            tree = ast.parse(source)
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return ""
    parts = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= 40:  # one-liners like "Return x." add little text and many documents
                parts.append(doc.strip())
    return "\n\n".join(parts)


def expand_sources(specs: Sequence[str] | str) -> list[str]:
    """Resolve specs to a sorted, de-duplicated list of files (``"python-docs"`` is kept as is).

    Raises ``FileNotFoundError`` naming the spec when it matches nothing readable.
    """
    if isinstance(specs, str):
        specs = [specs]
    out: list[str] = []
    for spec in specs:
        if spec == BUILTIN_CORPUS:
            out.append(spec)
            continue
        p = Path(spec).expanduser()
        if p.is_dir():
            matches = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES)
        elif p.is_file():
            matches = [str(p)]
        else:
            matches = sorted(f for f in glob.glob(str(p), recursive=True) if Path(f).is_file())
        matches = [m for m in matches if Path(m).suffix in TEXT_SUFFIXES]
        if not matches:
            raise FileNotFoundError(
                f"data source {spec!r} matches no .txt, .jsonl or .parquet file (nor is it {BUILTIN_CORPUS!r})"
            )
        out.extend(matches)
    seen: set[str] = set()
    return [x for x in out if not (x in seen or seen.add(x))]


def iter_documents(specs: Sequence[str] | str, text_field: str = "text") -> Iterator[str]:
    """Yield the documents of every source in order; empty documents are skipped. InputError naming the file (and
    line) for data that is not text: bytes that are not UTF-8, a .jsonl line that is not a JSON object with a string
    in ``text_field``; and when the sources hold no text at all."""
    count = 0
    for src in expand_sources(specs):
        if src == BUILTIN_CORPUS:
            docs = python_docs_corpus()
        elif src.endswith(".txt"):
            docs = _text_documents(src)
        elif src.endswith(".jsonl"):
            docs = _jsonl_documents(src, text_field)
        else:
            docs = _parquet_documents(src, text_field)
        for doc in docs:
            count += 1
            yield doc
    if not count:
        raise InputError(f"data sources {list(specs) if not isinstance(specs, str) else [specs]} hold no text "
                         "(every file is empty)")


def _decode(data: bytes, where: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{where}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}): binary data "
                         "is not read as text") from None
    if "\x00" in text:
        raise InputError(f"{where}: holds NUL bytes (offset {text.index(chr(0))}): binary data or UTF-16, not UTF-8 "
                         "text")
    return text


def _text_documents(path: str) -> Iterator[str]:
    text = _decode(Path(path).read_bytes(), path)
    if text.strip():
        yield text


def _jsonl_documents(path: str, text_field: str) -> Iterator[str]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            line = _decode(raw, where).strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{where}: not valid JSON ({e.msg}: column {e.colno})") from None
            if not isinstance(row, dict):
                raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
            if text_field not in row:
                raise InputError(f"{where}: no field {text_field!r} (fields: {sorted(row)})")
            yield from _text_value(row[text_field], f"{where}: field {text_field!r}")


def _text_value(value, where: str) -> Iterator[str]:
    """`value` as a document: strings are, empty ones and nulls are skipped, anything else is an InputError."""
    if value is not None and not isinstance(value, str):
        raise InputError(f"{where} holds {type(value).__name__} {str(value)[:40]!r}, not text")
    if value:
        yield value


def _parquet_documents(path: str, text_field: str) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow") from e
    table = pq.read_table(path, columns=[text_field])
    for row, text in enumerate(table.column(text_field).to_pylist()):
        yield from _text_value(text, f"{path}: row {row}, field {text_field!r}")


def sources_fingerprint(specs: Sequence[str] | str, text_field: str = "text") -> str:
    """A hash that changes when the sources change: file paths, sizes and mtimes; the interpreter for the
    built-in corpus. Used as part of the cache key."""
    h = hashlib.sha256(text_field.encode())
    for src in expand_sources(specs):
        if src == BUILTIN_CORPUS:
            h.update(f"{BUILTIN_CORPUS}|{sys.version}|{sysconfig.get_paths()['stdlib']}".encode())
        else:
            st = os.stat(src)
            h.update(f"{os.path.abspath(src)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]
