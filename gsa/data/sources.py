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
    """Yield the documents of every source in order; empty documents are skipped."""
    for src in expand_sources(specs):
        if src == BUILTIN_CORPUS:
            yield from python_docs_corpus()
        elif src.endswith(".txt"):
            text = Path(src).read_text(encoding="utf-8", errors="replace")
            if text.strip():
                yield text
        elif src.endswith(".jsonl"):
            with open(src, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    row = json.loads(line)
                    if text_field not in row:
                        raise KeyError(f"{src}:{lineno}: no field {text_field!r} (fields: {sorted(row)})")
                    if row[text_field]:
                        yield row[text_field]
        else:
            yield from _parquet_documents(src, text_field)


def _parquet_documents(path: str, text_field: str) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow") from e
    table = pq.read_table(path, columns=[text_field])
    for text in table.column(text_field).to_pylist():
        if text:
            yield text


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
