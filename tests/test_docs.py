"""The documents point at things that exist: every cited section of docs/algorithm.md, BENCHMARKS.md and docs/log.md
is a heading there, every recipe and results file the results page and the README name exists, and every file under
benchmarks/results is one the results page shows."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = {"docs/algorithm.md": ROOT / "docs" / "algorithm.md", "BENCHMARKS.md": ROOT / "BENCHMARKS.md",
        "docs/log.md": ROOT / "docs" / "log.md"}
CITATION = re.compile(r'(docs/algorithm\.md|BENCHMARKS\.md|docs/log\.md),? "([^"]+)"')
SOURCES = ["README.md", "BENCHMARKS.md", "docs/*.md", "gsa/**/*.py", "configs/*", "tests/**/*.py", "scripts/*.py",
           "benchmarks/**/*.sh", "benchmarks/**/*.py"]


def _headings(path: pathlib.Path) -> set[str]:
    return {line[3:].strip() for line in path.read_text().splitlines() if line.startswith("## ")}


def _sources():
    for pattern in SOURCES:
        yield from (p for p in ROOT.glob(pattern) if p.is_file() and p.name != "test_docs.py")


def test_cited_sections_exist():
    headings = {name: _headings(path) for name, path in DOCS.items()}
    cited = 0
    for path in _sources():
        for doc, section in CITATION.findall(path.read_text(errors="replace")):
            cited += 1
            section = " ".join(section.replace("#", " ").split())  # a citation may wrap, in a comment too
            assert section in headings[doc], f'{path.relative_to(ROOT)} cites {doc}, "{section}": not a section there'
    assert cited > 10  # the pattern finds the citations the repository makes


def test_algorithm_doc_has_the_sections_others_cite():
    assert _headings(DOCS["docs/algorithm.md"]) >= {
        "Recurrence", "Closed form", "Chunked algorithm", "Backward", "Decoding", "The layer", "The model",
        "Cost model", "Pitfalls"}


def test_results_page_and_readme_name_files_that_exist():
    text = (ROOT / "BENCHMARKS.md").read_text() + (ROOT / "README.md").read_text()
    paths = set(re.findall(r"(?:benchmarks|configs|docs|scripts)/[\w./-]+\.(?:sh|py|toml|md|json|png)", text))
    paths |= {f"benchmarks/results/{p}" for p in re.findall(r"`(h[12]00/[\w.-]+\.(?:json|png))`", text)}
    assert len(paths) > 20
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, missing


def test_every_results_file_is_on_the_results_page():
    page = (ROOT / "BENCHMARKS.md").read_text()
    results = ROOT / "benchmarks" / "results"
    files = [p.relative_to(results) for p in results.rglob("*") if p.is_file()]
    assert files
    orphans = sorted(str(f) for f in files if str(f.with_suffix("")) not in page)
    assert not orphans, f"not shown on the results page: {orphans}"
