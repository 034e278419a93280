"""Every Python snippet of README.md runs as printed.

Each ```python block is written to a file of its own in a fresh directory and
run there, twice in a row (a README example must survive being run again in the
same place, as users do). A block that defines ``test_`` functions is a test
module, so pytest runs it. A block may be left out only by an HTML comment right
before it, ``<!-- readme-test: skip: why -->``, and only a snippet that needs
the reader's own code may be: the list is checked below.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[2] / "README.md"
BLOCK = re.compile(
    r"(?:<!-- readme-test: skip: (?P<why>[^>]*?) -->\n)?```python\n(?P<code>.*?)^```",
    re.DOTALL | re.MULTILINE,
)


def snippets() -> list[tuple[int, str, str | None]]:
    """Each block of README.md: its line, its code, and why it is skipped (if it is)."""
    text = README.read_text()
    return [
        (text.count("\n", 0, found.start("code")) + 1, found["code"], found["why"])
        for found in BLOCK.finditer(text)
    ]


SNIPPETS = snippets()


def test_every_python_block_is_found_and_few_are_skipped() -> None:
    assert len(SNIPPETS) == README.read_text().count("```python")
    assert [why for _, _, why in SNIPPETS if why] == [
        "it replays your recorded histories against your own workflows"
    ]


@pytest.mark.parametrize(
    ("line", "code", "why"), SNIPPETS, ids=[f"line-{line}" for line, _, _ in SNIPPETS]
)
def test_a_readme_snippet_runs_as_printed(
    tmp_path: Path, line: int, code: str, why: str | None
) -> None:
    if why:
        pytest.skip(why)
    is_test = re.search(r"^def test_", code, re.MULTILINE) is not None
    script = tmp_path / ("test_snippet.py" if is_test else "snippet.py")
    script.write_text(code)
    command = [sys.executable, script.name]
    if is_test:
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", script.name]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXO_")}
    for attempt in ("first", "second"):
        done = subprocess.run(
            command,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, (
            f"README.md line {line}, {attempt} run:\n{done.stdout}\n{done.stderr}"
        )
        assert "Warning" not in done.stderr, done.stderr
