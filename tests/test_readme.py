"""The README's quickstart and op example run as written, and the README's test command is what CI runs."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _block_after(heading: str, lang: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(heading, 1)[1]
    return re.search(rf"```{lang}\n(.*?)```", section, re.S).group(1)


def test_quickstart_runs_as_written(tmp_path, monkeypatch):
    code = _block_after("## Quickstart", "python")
    assert len(code.strip().splitlines()) <= 10
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("/tmp/gsa-tiny", str(tmp_path / "gsa-tiny")), "README-quickstart", "exec"), {})


def test_op_example_runs_as_written():
    """Copied as it stands (every argument spelled out, the result unpacked as a pair), it runs, in a fresh
    interpreter: in this one an earlier test's imports (gsa.models) would bind gsa.ops for it."""
    code = _block_after("## The op", "python")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def test_ops_cite_the_repository_docs():
    """The op modules cite docs/algorithm.md (in the repository), not the outside spec they were written from."""
    for path in sorted((ROOT / "gsa" / "ops").glob("*.py")):
        assert "GSA_SPEC" not in path.read_text(), f"{path.name} cites GSA_SPEC.md, which is not in the repository"


def test_ci_runs_the_readme_test_command():
    commands = _block_after("## The two commands", "bash")
    test_cmd = next(line.split("#")[0].strip() for line in commands.splitlines() if "test" in line)
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines(), f"{test_cmd!r} not a line of .ci/run"
