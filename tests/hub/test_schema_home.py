"""The messages package is the one home of the wire format: it sits under everything (imports
nothing of fieldstation above ``config``), agrees with the station's outbox and with
docs/messages.md."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from fieldstation.messages import KINDS, SCHEMA_VERSION
from fieldstation.store.outbox import SCHEMA_VERSION as STATION_SCHEMA

ROOT = Path(__file__).resolve().parents[2]


def test_messages_import_nothing_above_config() -> None:
    code = (
        "import json, sys; import fieldstation.messages; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('fieldstation'))))"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
    )
    above = [
        name
        for name in loaded
        if name != "fieldstation"
        and not name.startswith(("fieldstation.messages", "fieldstation.config"))
    ]
    assert above == [], above
    heavy = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, fieldstation.messages; "
            "print([m for m in ('numpy', 'sqlalchemy', 'av', 'pyarrow') if m in sys.modules])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert heavy == "[]"


def test_station_and_schemas_agree_on_the_version_and_the_kinds() -> None:
    assert STATION_SCHEMA == SCHEMA_VERSION
    page = (ROOT / "docs" / "messages.md").read_text()
    table = page.split("## Kinds and priorities", 1)[1].split("##", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE))
    assert documented == KINDS
