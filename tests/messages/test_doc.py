"""docs/messages.md lists every field of every body model: its body tables are generated from
the models (scripts/messages-doc) and the committed page must equal the generated one."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fieldstation.messages import BODY_MODELS, SCHEMA_VERSION
from fieldstation.messages.bodies import Body
from fieldstation.messages.doc import BEGIN, END, DocError, body_tables, render

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "messages.md"


def _all_models() -> set[type[Body]]:
    found: set[type[Body]] = set()
    queue: list[type[Body]] = list(BODY_MODELS[SCHEMA_VERSION].values())
    while queue:
        model = queue.pop()
        if model in found:
            continue
        found.add(model)
        for field in model.model_fields.values():
            args = [field.annotation, *getattr(field.annotation, "__args__", ())]
            queue += [a for a in args if isinstance(a, type) and issubclass(a, Body)]
    return found


def test_the_committed_page_is_the_generated_one() -> None:
    page = PAGE.read_text(encoding="utf-8")
    assert render(page) == page, "docs/messages.md is out of date: run scripts/messages-doc"


def test_every_field_of_every_body_model_has_a_row_under_its_model() -> None:
    page = PAGE.read_text(encoding="utf-8")
    tables = page.split(BEGIN, 1)[1].split(END, 1)[0]
    models = _all_models()
    assert {"DetectionItem", "HeartbeatMetrics", "SummaryLabel", "SummaryReading"} <= {
        m.__name__ for m in models
    }
    sections = {block.split("\n", 1)[0]: block for block in tables.split("\n#") if block.strip()}
    for model in models:
        heading = re.compile(rf"(: |# ){model.__name__}( \(|$)")
        [section] = [text for title, text in sections.items() if heading.search(title)]
        for name in model.model_fields:
            assert f"\n| `{name}` |" in section, (model.__name__, name)


def test_a_new_field_changes_the_tables() -> None:
    class Probe(Body):
        """probe"""

        ping: int

    before = body_tables()
    BODY_MODELS[SCHEMA_VERSION]["probe"] = Probe
    try:
        after = body_tables()
    finally:
        del BODY_MODELS[SCHEMA_VERSION]["probe"]
    assert before != after and "| `ping` | int | yes |" in after
    assert body_tables() == before


def test_render_needs_both_markers_in_order() -> None:
    with pytest.raises(DocError):
        render("no markers")
    with pytest.raises(DocError):
        render(f"{END}\n{BEGIN}\n")
    assert render(f"a\n{BEGIN}\nold\n{END}\nz") == f"a\n{BEGIN}\n\n{body_tables()}\n{END}\nz"


def test_the_script_checks_and_rewrites_the_page(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "messages-doc"
    ok = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    stale = tmp_path / "messages.md"
    stale.write_text(f"# page\n{BEGIN}\n| `gone` |\n{END}\ntail\n", encoding="utf-8")
    check = [sys.executable, str(script), "--check", str(stale)]
    refused = subprocess.run(check, capture_output=True, text=True)
    assert refused.returncode == 1 and "out of date" in refused.stderr
    subprocess.run([sys.executable, str(script), str(stale)], check=True, capture_output=True)
    text = stale.read_text(encoding="utf-8")
    assert "`gone`" not in text and text == render(text) and text.endswith(f"{END}\ntail\n")
    assert subprocess.run(check, capture_output=True).returncode == 0
