"""The promise pages name the tests that prove them: every test they name must exist.

docs/guarantees.md and docs/faults.md cite tests as ``tests/path.py::test_name`` (a bare
``::test_name`` that follows refers to the last file named). A renamed or deleted test would
leave a promise without its proof; this test fails then.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = re.compile(r"`((tests/[\w/]+\.py)(::\w+)?|::\w+)`")


def cited_tests(page: Path) -> list[tuple[str, str | None]]:
    """``(file, test name or None)`` for every test cited on ``page``, in order."""
    cited: list[tuple[str, str | None]] = []
    current: str | None = None
    for match in REFERENCE.finditer(page.read_text(encoding="utf-8")):
        if match.group(2):
            current = match.group(2)
            name = match.group(3)
        else:
            name = match.group(1)
        assert current is not None, f"{page.name}: {match.group(0)} names no file before it"
        cited.append((current, name[2:] if name else None))
    return cited


@pytest.mark.parametrize("page", ["guarantees.md", "faults.md"])
def test_every_cited_test_exists(page: str) -> None:
    cited = cited_tests(ROOT / "docs" / page)
    assert len(cited) > 10, f"docs/{page} should cite the tests behind its promises"
    missing = []
    for file, name in cited:
        path = ROOT / file
        if not path.is_file():
            missing.append(file)
        elif name and not re.search(rf"^\s*def {name}\b", path.read_text(encoding="utf-8"), re.M):
            missing.append(f"{file}::{name}")
    assert not missing, f"docs/{page} cites tests that do not exist: {missing}"
